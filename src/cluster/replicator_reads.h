#pragma once
// Private to the replicator: reads that must see every acknowledged change.
// An acknowledged change is on at least W = 1 + sync_acks nodes (its writer
// and the nodes that acknowledged it: replicas, or stand-ins for replicas
// that were down, see replicator_push.h), so a read that has heard from all
// but W - 1 of the N nodes that may hold copies has heard from one of them.
// A read pulls the session from every live peer and completes once N - W of
// them answered: the copy here then covers every acknowledged change, and a
// session none of them holds does not exist. Short of that it fails (503 for
// the caller), rather than serve a copy that may have forgotten something or
// take an existing id for a new one.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cluster/replicator_state.h"

namespace assistd::cluster::replication {

class Reads {
  public:
    explicit Reads(SharedState& state) : s_(state) {}

    // Ok when the session is here (live) once enough peers answered;
    // kNotFound when it is deleted or none of them holds it;
    // kResourceExhausted when too few peers are reachable or answer in time.
    // With degraded writes a session held here is read from what answers
    // (every live peer, possibly none); an id held nowhere reachable still
    // needs its answers: it is never taken for a new one.
    void read(const std::string& session_id, int64_t timeout_ms, Callback done,
              Completions& completions);
    // How many other nodes a read must hear from (N - W).
    size_t answers_needed() const;

    // `peer` sent an empty delta for the session: it does not hold it.
    void note_not_held(NodeId peer, const std::string& session_id);
    // `peer`'s state in answer to a read's pull (an ack with id 0).
    void note_reply(NodeId peer, const SessionState& state, Completions& done);
    // Completes the session's reads that are now answered (the copy here changed, or an answer
    // came).
    void check(const std::string& session_id, Completions& done);
    // `node` left the fleet: reads stop waiting for it (one node fewer may hold copies).
    void peer_departed(NodeId node, Completions& done);
    // Health changed: a read that can no longer get its answers fails now.
    void recheck(Completions& done);
    // Reads past their deadline fail.
    void expire(int64_t now, Completions& done);

  private:
    struct ReadWaiter {
        std::string session_id;
        size_t needed = 0;
        std::set<NodeId> asked;
        std::set<NodeId> not_held;  // said they lack the session
        // Each peer's state as it answered this read's pull; it counts once the
        // copy here covers it (its push of the difference arrived)
        std::map<NodeId, SessionState> replies;
        int64_t deadline_ms = 0;
        Callback done;
    };

    // The live members other than this node: whom a read asks.
    std::set<NodeId> live_peers() const;
    // The outcome of a read that heard enough, from the copy here.
    Status outcome(const std::string& session_id) const;
    Error too_few(const ReadWaiter& w, size_t reachable) const;

    SharedState& s_;
    std::vector<ReadWaiter> waiters_;
};

}  // namespace assistd::cluster::replication
