#include "cluster/kv_standby_link.h"

#include <spdlog/spdlog.h>

#include "cluster/replicator.h"
#include "common/little_endian.h"

namespace assistd::cluster {
namespace {

constexpr unsigned char kMagic = 0xC6;
constexpr unsigned char kRun = 1;
constexpr unsigned char kGapNotice = 2;
constexpr size_t kMaxNoticeKeyBytes = 4096;
constexpr size_t kHeaderBytes = 2 + 8 + 8;

}  // namespace

KvStandbyLink::KvStandbyLink(const NodeIdentity& self, Replicator& replicator, Transport& transport,
                             KvStandbyLinkOptions options)
    : self_(self), replicator_(replicator), transport_(transport), options_(options) {}

std::string KvStandbyLink::header(unsigned char kind, size_t payload_bytes) const {
    std::string frame;
    frame.reserve(kHeaderBytes + payload_bytes);
    frame.push_back(static_cast<char>(kMagic));
    frame.push_back(static_cast<char>(kind));
    put_le64(frame, self_.node_id);
    put_le64(frame, self_.incarnation);
    return frame;
}

void KvStandbyLink::send_gap_notice(NodeId to, std::string_view session_key) {
    const auto address = replicator_.address_of(to);
    if (!address || session_key.empty() || session_key.size() > kMaxNoticeKeyBytes) return;
    std::string frame = header(kGapNotice, session_key.size());
    frame.append(session_key);
    transport_.send(*address, std::move(frame));  // small: the replication stream, best effort
    gap_notices_sent_.fetch_add(1);
}

void KvStandbyLink::set_gap_handler(GapHandler handler) {
    std::lock_guard lk(handler_mu_);
    gap_handler_ = std::move(handler);
}

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
    std::string frame = header(kRun, head.size() + body.size());
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
    const unsigned char kind = frame.size() >= kHeaderBytes ? static_cast<unsigned char>(frame[1]) : 0;
    if (frame.size() < kHeaderBytes || static_cast<unsigned char>(frame[0]) != kMagic ||
        (kind != kRun && kind != kGapNotice) ||
        (kind == kGapNotice && (frame.size() == kHeaderBytes || frame.size() - kHeaderBytes > kMaxNoticeKeyBytes))) {
        if (frames_rejected_.fetch_add(1) % 1000 < 5)
            spdlog::warn("standby KV: a malformed frame from {} was dropped", origin.host.empty() ? "a peer" : origin.host);
        return;
    }
    const NodeId from = get_le64(frame.data() + 2);
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
    GapHandler gap_handler;
    {
        std::lock_guard lk(handler_mu_);
        handler = handler_;
        gap_handler = gap_handler_;
    }
    if (kind == kGapNotice) {
        gap_notices_received_.fetch_add(1);
        if (gap_handler) gap_handler(frame.substr(kHeaderBytes), from);
    } else if (handler) {
        handler(frame.substr(kHeaderBytes), from);
    }
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
    s.gap_notices_sent = gap_notices_sent_.load();
    s.gap_notices_received = gap_notices_received_.load();
    return s;
}

}  // namespace assistd::cluster
