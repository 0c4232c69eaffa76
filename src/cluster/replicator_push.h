#pragma once
// Private to the replicator: pushing local changes to the session's other
// replicas as batches of deltas (bounded in flight per peer, resent when not
// acknowledged in time), applying and acknowledging the batches peers push,
// and waiting for the acks a write needs (await_replication).
#include <string>
#include <vector>

#include "cluster/replicator_reads.h"
#include "cluster/replicator_state.h"

namespace assistd::cluster::replication {

// Applies a batch's deltas with one group commit; one status per item (ok
// for the empty "not held" ones). Runs without the lock: the store is
// thread-safe and an apply waits for an fsync.
std::vector<Status> apply_deltas(state::SessionStore& store, const Deltas& batch);

class Push {
  public:
    Push(SharedState& state, Reads& reads) : s_(state), reads_(reads) {}

    // Queues the sessions written here for their other replicas and pushes.
    void queue(const std::set<std::string>& written);
    // Sends `peer` what is pending for it, as far as back-pressure allows.
    void pump(NodeId peer);
    void pump_all();

    // A batch a peer pushed, after apply_deltas: counts, answers reads waiting
    // for the session, and acknowledges it with the states here.
    void on_deltas(const Deltas& batch, const std::vector<Status>& applied, Completions& done);
    void on_ack(const Ack& ack, Completions& done);

    void await_replication(const std::string& session_id, const state::crdt::VersionVector& version,
                           int64_t timeout_ms, Callback done, Completions& completions);
    // Batches nobody acknowledged in ack_timeout_ms: forgotten, their sessions pending again.
    void resend_unacknowledged(int64_t now);
    // A replica that turned suspect no longer holds a degraded write up.
    void recheck_waiters(Completions& done);
    // Waits past their deadline fail.
    void expire_waiters(int64_t now, Completions& done);

    // The acks a write of the session waits for (sync_acks, capped by the replicas there can be).
    size_t acks_needed(const std::string& session_id) const;
    size_t unacknowledged() const;
    std::vector<ReplicationLagSample> take_lag_samples();

  private:
    struct AckWaiter {
        std::string session_id;
        state::crdt::VersionVector target;
        bool deleted = false;  // waiting for the tombstone to replicate
        size_t needed = 0;     // lowered while replicas are suspect (degraded writes)
        size_t wanted = 0;     // what sync_acks asks for
        std::set<NodeId> acked;
        int64_t deadline_ms = 0;
        Callback done;
    };

    void pump(NodeId peer, PeerLink& link);
    // The peer reported its state of a session (an ack): completes the waits it satisfies.
    void note_peer_state(NodeId peer, const SessionState& state, Completions& done);
    // acks_needed less the session's suspect replicas when degraded writes are on.
    size_t acks_reachable(const std::string& session_id) const;

    SharedState& s_;
    Reads& reads_;
    uint64_t next_batch_ = 1;
    std::vector<AckWaiter> waiters_;
    std::vector<ReplicationLagSample> lag_samples_;
};

}  // namespace assistd::cluster::replication
