#pragma once
// Private to the replicator: anti-entropy. Each round a digest of bucket
// hashes goes to every live member; the peer answers the buckets that differ
// with a summary of its states there, and each side pushes what the other
// lacks or pulls what it lacks. Sessions held here but replicated elsewhere
// travel as offers in the digest until their replicas confirm them: the
// hand-off.
#include <cstdint>
#include <set>
#include <string>

#include "cluster/replicator_state.h"

namespace assistd::cluster::replication {

class AntiEntropy {
  public:
    AntiEntropy(SharedState& state, uint64_t seed) : s_(state), rng_(seed) {}

    // `peer` came (back) to life: it gets a digest at the next tick.
    void peer_reconnected(NodeId peer) { reconnected_.insert(peer); }
    // A round when one is due or a peer came back.
    void tick(int64_t now);

    void on_digest(const Digest& digest);
    void on_summary(const Summary& summary);
    // What the puller lacks goes to the pushes (and, for a refresh's pull,
    // straight back with this node's states as the answer).
    void on_pull(const Pull& pull);

    // Sessions held here that this node does not replicate and that some live
    // replica has not confirmed holding.
    size_t unhanded() const;

  private:
    void round();

    SharedState& s_;
    uint64_t rng_;
    uint64_t round_ = 0;
    std::set<NodeId> reconnected_;  // peers to send a digest to at the next tick
};

}  // namespace assistd::cluster::replication
