#pragma once
// Rate-limit usage between peers, so a key's limits hold across the fleet
// (serve/rate_limit.h): every charge a node makes to a key's buckets — a
// request, the tokens it reserves up front, what it gives back or owes at the
// end — goes at once to every live peer, which charges its own buckets of the
// same key alike. Each node's buckets then show the fleet's usage, short only
// of what peers admitted within the last one-way delay. The frame (on the
// replication stream, small):
//
//   0xC7, u64 sender node id, u64 sender incarnation, then entries of
//   32 bytes key id (the API key's SHA-256), f64 requests, f64 tokens
//
// A frame whose sender is not the node the peer's certificate names is
// dropped unread, as are malformed ones and non-finite or absurd amounts.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/node_identity.h"
#include "cluster/transport.h"

namespace assistd::cluster {

class Replicator;

struct RateUsage {
    std::array<uint8_t, 32> key{};
    double requests = 0;  // requests admitted (1 per request)
    double tokens = 0;    // tokens charged; negative: given back
};

struct RateUsageLinkStats {
    uint64_t frames_sent = 0;
    uint64_t frames_received = 0;
    uint64_t frames_rejected = 0;  // malformed, or from a sender that is not who it says
};

class RateUsageLink {
public:
    using Handler = std::function<void(const std::vector<RateUsage>& usage, NodeId from)>;

    RateUsageLink(const NodeIdentity& self, Replicator& replicator, Transport& transport);

    // To every live peer (best effort: a peer that is down misses it).
    void broadcast(const std::vector<RateUsage>& usage);

    static bool is_rate_frame(std::string_view frame);
    void receive(std::string_view frame, const FrameOrigin& origin);
    // Runs on the transport's threads; set before peers can send.
    void set_handler(Handler handler);

    RateUsageLinkStats stats() const;

    // The frame codec, public for tests and fuzzing.
    static std::string encode(NodeId from, uint64_t incarnation, const std::vector<RateUsage>& usage);
    struct Decoded {
        NodeId from = 0;
        std::vector<RateUsage> usage;
    };
    // nullopt: not a well-formed frame.
    static std::optional<Decoded> decode(std::string_view frame);

private:
    NodeIdentity self_;
    Replicator& replicator_;
    Transport& transport_;
    std::mutex handler_mu_;
    Handler handler_;
    std::atomic<uint64_t> frames_sent_{0}, frames_received_{0}, frames_rejected_{0};
};

}  // namespace assistd::cluster
