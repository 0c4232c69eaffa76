#pragma once
// Standby KV between peers: opaque runs (serve/kv_standby.h encodes them) go
// to a session's standby replicas on the transport's bulk streams, within a
// per-peer byte budget; runs that arrive are handed to a handler with the
// node that sent them, as the connection proved it. The frame:
//
//   0xC6, version 1, u64 sender node id, u64 sender incarnation, payload
//
// A frame whose sender is not the node the peer's certificate names is
// dropped unread; nothing here parses the payload.
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
};

class KvStandbyLink {
public:
    enum class SendOutcome { kSent, kNoTarget, kDropped };
    using Handler = std::function<void(std::string_view payload, NodeId from)>;

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

    KvStandbyLinkStats stats() const;

private:
    NodeIdentity self_;
    Replicator& replicator_;
    Transport& transport_;
    KvStandbyLinkOptions options_;
    std::mutex handler_mu_;
    Handler handler_;
    std::atomic<uint64_t> frames_sent_{0}, bytes_sent_{0}, frames_dropped_{0}, no_replica_{0},
        frames_received_{0}, bytes_received_{0}, frames_rejected_{0};
};

}  // namespace assistd::cluster
