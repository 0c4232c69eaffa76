#include "cluster/rate_usage_link.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cmath>
#include <cstring>

#include "cluster/replicator.h"
#include "common/little_endian.h"

namespace assistd::cluster {
namespace {

constexpr unsigned char kMagic = 0xC7;
constexpr size_t kHeaderBytes = 1 + 8 + 8;
constexpr size_t kEntryBytes = 32 + 8 + 8;
constexpr size_t kMaxEntries = 4096;
// A charge beyond this is no real request's: dropped as malformed.
constexpr double kMaxAmount = 1e12;

void put_f64(std::string& out, double v) { put_le64(out, std::bit_cast<uint64_t>(v)); }
double get_f64(const char* p) { return std::bit_cast<double>(get_le64(p)); }

}  // namespace

RateUsageLink::RateUsageLink(const NodeIdentity& self, Replicator& replicator, Transport& transport)
    : self_(self), replicator_(replicator), transport_(transport) {}

std::string RateUsageLink::encode(NodeId from, uint64_t incarnation, const std::vector<RateUsage>& usage) {
    std::string frame;
    frame.reserve(kHeaderBytes + usage.size() * kEntryBytes);
    frame.push_back(static_cast<char>(kMagic));
    put_le64(frame, from);
    put_le64(frame, incarnation);
    for (const auto& u : usage) {
        frame.append(reinterpret_cast<const char*>(u.key.data()), u.key.size());
        put_f64(frame, u.requests);
        put_f64(frame, u.tokens);
    }
    return frame;
}

std::optional<RateUsageLink::Decoded> RateUsageLink::decode(std::string_view frame) {
    if (frame.size() < kHeaderBytes || static_cast<unsigned char>(frame[0]) != kMagic) return std::nullopt;
    const size_t body = frame.size() - kHeaderBytes;
    if (body == 0 || body % kEntryBytes != 0 || body / kEntryBytes > kMaxEntries) return std::nullopt;
    Decoded d;
    d.from = get_le64(frame.data() + 1);
    for (size_t at = kHeaderBytes; at < frame.size(); at += kEntryBytes) {
        RateUsage u;
        std::memcpy(u.key.data(), frame.data() + at, u.key.size());
        u.requests = get_f64(frame.data() + at + 32);
        u.tokens = get_f64(frame.data() + at + 40);
        if (!std::isfinite(u.requests) || !std::isfinite(u.tokens) || std::abs(u.requests) > kMaxAmount ||
            std::abs(u.tokens) > kMaxAmount)
            return std::nullopt;
        d.usage.push_back(u);
    }
    return d;
}

bool RateUsageLink::is_rate_frame(std::string_view frame) {
    return !frame.empty() && static_cast<unsigned char>(frame[0]) == kMagic;
}

void RateUsageLink::broadcast(const std::vector<RateUsage>& usage) {
    if (usage.empty()) return;
    const std::string frame = encode(self_.node_id, self_.incarnation, usage);
    for (const auto& p : replicator_.peers()) {
        if (p.health != PeerHealth::kLive || p.node_id == 0 || p.node_id == self_.node_id) continue;
        transport_.send(p.address, frame);
        frames_sent_.fetch_add(1);
    }
}

void RateUsageLink::receive(std::string_view frame, const FrameOrigin& origin) {
    auto decoded = decode(frame);
    if (!decoded) {
        if (frames_rejected_.fetch_add(1) % 1000 < 5)
            spdlog::warn("rate limits: a malformed usage frame from {} was dropped",
                         origin.host.empty() ? "a peer" : origin.host);
        return;
    }
    if (origin.node && *origin.node != decoded->from) {
        if (frames_rejected_.fetch_add(1) % 1000 < 5)
            spdlog::warn("rate limits: a usage frame claiming node {} came from node {} (its certificate); dropped",
                         format_node_id(decoded->from), format_node_id(*origin.node));
        return;
    }
    if (decoded->from == self_.node_id) return;
    frames_received_.fetch_add(1);
    Handler handler;
    {
        std::lock_guard lk(handler_mu_);
        handler = handler_;
    }
    if (handler) handler(decoded->usage, decoded->from);
}

void RateUsageLink::set_handler(Handler handler) {
    std::lock_guard lk(handler_mu_);
    handler_ = std::move(handler);
}

RateUsageLinkStats RateUsageLink::stats() const {
    RateUsageLinkStats s;
    s.frames_sent = frames_sent_.load();
    s.frames_received = frames_received_.load();
    s.frames_rejected = frames_rejected_.load();
    return s;
}

}  // namespace assistd::cluster
