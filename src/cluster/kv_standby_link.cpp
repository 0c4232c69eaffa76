#include "cluster/kv_standby_link.h"

#include <spdlog/spdlog.h>

#include "cluster/replicator.h"

namespace assistd::cluster {
namespace {

constexpr unsigned char kMagic = 0xC6;
constexpr unsigned char kVersion = 1;
constexpr size_t kHeaderBytes = 2 + 8 + 8;

void put_u64(std::string& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t get_u64(std::string_view s, size_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return v;
}

}  // namespace

KvStandbyLink::KvStandbyLink(const NodeIdentity& self, Replicator& replicator, Transport& transport,
                             KvStandbyLinkOptions options)
    : self_(self), replicator_(replicator), transport_(transport), options_(options) {}

bool KvStandbyLink::is_kv_frame(std::string_view frame) {
    return !frame.empty() && static_cast<unsigned char>(frame[0]) == kMagic;
}

KvStandbyLink::SendOutcome KvStandbyLink::send(std::string_view session_key, std::string_view head,
                                               std::string_view body) {
    if (options_.copies == 0) return SendOutcome::kNoTarget;
    const auto targets = replicator_.standby_addresses(session_key, options_.copies);
    if (targets.empty()) {
        no_replica_.fetch_add(1);
        return SendOutcome::kNoTarget;
    }
    std::string frame;
    frame.reserve(kHeaderBytes + head.size() + body.size());
    frame.push_back(static_cast<char>(kMagic));
    frame.push_back(static_cast<char>(kVersion));
    put_u64(frame, self_.node_id);
    put_u64(frame, self_.incarnation);
    frame.append(head);
    frame.append(body);
    bool all = true;
    for (size_t i = 0; i < targets.size(); ++i) {
        const size_t bytes = frame.size();
        const bool taken = transport_.send_bulk(targets[i], i + 1 == targets.size() ? std::move(frame) : frame,
                                                options_.max_queued_bytes);
        if (taken) {
            frames_sent_.fetch_add(1);
            bytes_sent_.fetch_add(bytes);
        } else {
            frames_dropped_.fetch_add(1);
            all = false;
        }
    }
    return all ? SendOutcome::kSent : SendOutcome::kDropped;
}

void KvStandbyLink::receive(std::string_view frame, const FrameOrigin& origin) {
    if (frame.size() < kHeaderBytes || static_cast<unsigned char>(frame[0]) != kMagic ||
        static_cast<unsigned char>(frame[1]) != kVersion) {
        if (frames_rejected_.fetch_add(1) % 1000 < 5)
            spdlog::warn("standby KV: a malformed frame from {} was dropped", origin.host.empty() ? "a peer" : origin.host);
        return;
    }
    const NodeId from = get_u64(frame, 2);
    if (origin.node && *origin.node != from) {
        if (frames_rejected_.fetch_add(1) % 1000 < 5)
            spdlog::warn("standby KV: a frame claiming node {} came from node {} (its certificate); dropped",
                         format_node_id(from), format_node_id(*origin.node));
        return;
    }
    if (from == self_.node_id) return;
    frames_received_.fetch_add(1);
    bytes_received_.fetch_add(frame.size());
    Handler handler;
    {
        std::lock_guard lk(handler_mu_);
        handler = handler_;
    }
    if (handler) handler(frame.substr(kHeaderBytes), from);
}

void KvStandbyLink::set_handler(Handler handler) {
    std::lock_guard lk(handler_mu_);
    handler_ = std::move(handler);
}

KvStandbyLinkStats KvStandbyLink::stats() const {
    KvStandbyLinkStats s;
    s.frames_sent = frames_sent_.load();
    s.bytes_sent = bytes_sent_.load();
    s.frames_dropped = frames_dropped_.load();
    s.no_replica = no_replica_.load();
    s.frames_received = frames_received_.load();
    s.bytes_received = bytes_received_.load();
    s.frames_rejected = frames_rejected_.load();
    return s;
}

}  // namespace assistd::cluster
