#pragma once
// The replication transport: frames between node addresses. The replicator
// is written against this seam only, so a deterministic simulation drives it
// with a simulated network and the server with real streams.
#include <optional>
#include <string>

#include "cluster/node_identity.h"

namespace assistd::cluster {

class Transport {
  public:
    virtual ~Transport() = default;
    // Queues one frame for the node at `address`. Best effort: a frame may be
    // lost, delayed, duplicated or reordered; the replicator copes with all
    // of it. Must not block and must not call back into the replicator.
    virtual void send(const std::string& address, std::string frame) = 0;
    // A bulk frame (standby KV, megabytes): on a stream of its own so it never
    // holds up the replicator's frames, in order with the address's other bulk
    // frames. False, and dropped, when `max_queued_bytes` of bulk frames wait
    // for that address already or there is no link for it. Must not block.
    virtual bool send_bulk(const std::string& address, std::string frame, size_t max_queued_bytes) {
        (void)max_queued_bytes;
        send(address, std::move(frame));
        return true;
    }
};

// Who sent an inbound frame, as the transport established it: never what the
// frame says about itself.
struct FrameOrigin {
    std::optional<NodeId> node;  // the node the sender's certificate names; none: not authenticated
    std::string host;            // the connection's source IP ("" when unknown, as in a simulation)
};

}  // namespace assistd::cluster
