#pragma once
// Private to the replicator: leaving the fleet. leave() stops counting this
// node a member (its sessions are handed off); announce() tells every peer
// this life is going away, resending until each live peer acknowledges; a
// peer's leave takes it out of placement at once.
#include <cstdint>
#include <set>

#include "cluster/replicator_reads.h"
#include "cluster/replicator_state.h"

namespace assistd::cluster::replication {

class Departure {
  public:
    Departure(SharedState& state, Reads& reads) : s_(state), reads_(reads) {}

    void leave();
    void announce();
    // Live peers that have not acknowledged the departure yet.
    size_t unconfirmed() const;
    // Resends the leave to peers that have not acknowledged it, each heartbeat interval.
    void tick(int64_t now);

    // A peer leaves: noted (once per life), then acknowledged.
    void on_leave(const Leave& leave, Completions& done);
    void on_leave_ack(const LeaveAck& ack);

  private:
    void peer_departed(NodeId node, uint64_t incarnation, Completions& done);
    void send_leave(NodeId peer);

    SharedState& s_;
    Reads& reads_;
    bool announced_ = false;
    std::set<NodeId> pending_;  // peers yet to acknowledge the Leave
    int64_t next_leave_ms_ = 0;
};

}  // namespace assistd::cluster::replication
