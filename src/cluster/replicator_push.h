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

    // Completes once acks_wanted() peers hold `version`: the session's
    // replicas, and while one of them is down or slow to answer, stand-ins
    // from the session's preference list (a sloppy quorum: the stand-in keeps
    // its copy and hands it to the replicas when they are back, through the
    // anti-entropy hand-off).
    void await_replication(const std::string& session_id, const state::crdt::VersionVector& version,
                           int64_t timeout_ms, Callback done, Completions& completions);
    // Batches nobody acknowledged in ack_timeout_ms: forgotten, their sessions pending again.
    void resend_unacknowledged(int64_t now);
    // Health or time moved on: writes still waiting get stand-ins for targets
    // that turned suspect (and one more each hedge interval a write waits);
    // with degraded writes a write needs no more acks than there are live peers.
    void recheck_waiters(int64_t now, Completions& done);
    // Waits past their deadline fail.
    void expire_waiters(int64_t now, Completions& done);

    size_t unacknowledged() const;
    std::vector<ReplicationLagSample> take_lag_samples();

  private:
    struct AckWaiter {
        std::string session_id;
        state::crdt::VersionVector target;
        bool deleted = false;  // waiting for the tombstone to replicate
        size_t needed = 0;     // lowered while peers are suspect (degraded writes)
        size_t wanted = 0;     // what sync_acks asks for
        std::set<NodeId> acked;
        std::set<NodeId> targets;  // the peers pushed to for this write: replicas, then stand-ins
        int64_t next_hedge_ms = 0;
        int64_t deadline_ms = 0;
        Callback done;
    };

    void pump(NodeId peer, PeerLink& link);
    // The peer reported its state of a session (an ack): completes the waits it satisfies.
    void note_peer_state(NodeId peer, const SessionState& state, Completions& done);
    // acks_wanted, or the live peers when fewer and degraded writes are on.
    size_t acks_reachable() const;
    // Adds stand-ins from the session's preference list until the targets
    // that may still answer can give the acks the write needs; `hedge` adds
    // one more (its targets are slow). The new targets get the session pushed.
    void widen(AckWaiter& w, bool hedge);
    // Completes the waiter when it has its acks.
    bool satisfied(AckWaiter& w, Completions& done);

    SharedState& s_;
    Reads& reads_;
    uint64_t next_batch_ = 1;
    std::vector<AckWaiter> waiters_;
    std::vector<ReplicationLagSample> lag_samples_;
};

}  // namespace assistd::cluster::replication
