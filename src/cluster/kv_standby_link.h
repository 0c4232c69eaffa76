#pragma once
// Standby KV between peers: opaque runs (serve/kv_standby.h encodes them) go
// to a session's standby replicas on the transport's bulk streams, within a
// per-peer byte budget; runs that arrive are handed to a handler with the
// node that sent them, as the connection proved it. The frame:
//
//   0xC6, kind, u64 sender node id, u64 sender incarnation, payload
//   kind 1: a run (the payload); kind 2: a gap notice (the payload is a
//   session key: "a run of it continued what I do not hold; send it all")
//
// A frame whose sender is not the node the peer's certificate names is
// dropped unread; nothing here parses a run.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "cluster/node_identity.h"
#include "cluster/transport.h"

namespace assistd::cluster {

class Replicator;

struct KvStandbyLinkOptions {
    size_t copies = 2;                          // standby replicas per session (0: off)
    size_t max_queued_bytes = size_t{256} << 20;  // per peer, not yet on the wire; beyond it runs are dropped
};

struct KvStandbyLinkStats {
    uint64_t frames_sent = 0;
    uint64_t bytes_sent = 0;
    uint64_t frames_dropped = 0;       // over a peer's budget
    uint64_t no_replica = 0;           // runs with no live standby replica to go to
    uint64_t frames_received = 0;
    uint64_t bytes_received = 0;
    uint64_t frames_rejected = 0;      // malformed, or from a sender that is not who it says
    uint64_t gap_notices_sent = 0;
    uint64_t gap_notices_received = 0;
};

class KvStandbyLink {
public:
    enum class SendOutcome { kSent, kNoTarget, kDropped };
    using Handler = std::function<void(std::string_view payload, NodeId from)>;
    using GapHandler = std::function<void(std::string_view session_key, NodeId from)>;

    KvStandbyLink(const NodeIdentity& self, Replicator& replicator, Transport& transport,
                  KvStandbyLinkOptions options);

    // One run of `session_key`'s KV (the payload is `head` then `body`, kept
    // apart so that megabytes are copied once) to its standby replicas:
    // kSent when every one of them took it, kNoTarget when none is live,
    // kDropped when one refused it (over budget: the sender starts the
    // session over next time).
    SendOutcome send(std::string_view session_key, std::string_view head, std::string_view body);

    // Whether a frame is this link's (the transport's handler dispatches on it).
    static bool is_kv_frame(std::string_view frame);
    void receive(std::string_view frame, const FrameOrigin& origin);
    // Runs on the transport's threads; set before peers can send.
    void set_handler(Handler handler);
    // Tells node `to` that a run of `session_key` it sent continued a prefix
    // this node lacks (a run was lost, or this node restarted).
    void send_gap_notice(NodeId to, std::string_view session_key);
    // Gap notices from peers (on the transport's threads).
    void set_gap_handler(GapHandler handler);

    KvStandbyLinkStats stats() const;

private:
    std::string header(unsigned char kind, size_t payload_bytes) const;

    NodeIdentity self_;
    Replicator& replicator_;
    Transport& transport_;
    KvStandbyLinkOptions options_;
    std::mutex handler_mu_;
    Handler handler_;
    GapHandler gap_handler_;
    std::atomic<uint64_t> gap_notices_sent_{0}, gap_notices_received_{0};
    std::atomic<uint64_t> frames_sent_{0}, bytes_sent_{0}, frames_dropped_{0}, no_replica_{0},
        frames_received_{0}, bytes_received_{0}, frames_rejected_{0};
};

}  // namespace assistd::cluster
