#pragma once
// The replication transport: frames between node addresses. The replicator
// is written against this seam only, so a deterministic simulation drives it
// with a simulated network and the server with real streams.
#include <string>

namespace assistd::cluster {

class Transport {
  public:
    virtual ~Transport() = default;
    // Queues one frame for the node at `address`. Best effort: a frame may be
    // lost, delayed, duplicated or reordered; the replicator copes with all
    // of it. Must not block and must not call back into the replicator.
    virtual void send(const std::string& address, std::string frame) = 0;
};

}  // namespace assistd::cluster
