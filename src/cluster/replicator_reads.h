#pragma once
// Private to the replicator: reads that need other replicas. Fetch-on-miss
// pulls a session this node lacks; a refresh (or quorum read) pulls what the
// copy here lacks and counts the replicas' answers.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cluster/replicator_state.h"

namespace assistd::cluster::replication {

class Reads {
  public:
    explicit Reads(SharedState& state) : s_(state) {}

    void fetch(const std::string& session_id, int64_t timeout_ms, Callback done,
               Completions& completions);
    void refresh(const std::string& session_id, int64_t timeout_ms, size_t quorum, Callback done,
                 Completions& completions);

    // `peer` sent an empty delta for the session: it does not hold it.
    void note_not_held(NodeId peer, const std::string& session_id);
    // `peer`'s state in answer to a refresh's pull (an ack with id 0).
    void note_reply(NodeId peer, const SessionState& state, Completions& done);
    // Completes the session's waits that are now answered (the copy here changed, or an answer
    // came).
    void check(const std::string& session_id, Completions& done);
    // `node` left the fleet: a refresh stops waiting for it, a fetch asks the
    // session's replicas as placed now.
    void peer_departed(NodeId node, Completions& done);
    // Health changed: a refresh stops waiting for a replica that turned
    // suspect (so does a fetch by a replica cut off, with degraded writes).
    void recheck(Completions& done);
    // Waits past their deadline complete with what there is.
    void expire(int64_t now, Completions& done);

  private:
    struct FetchWaiter {
        std::string session_id;
        bool refresh = false;       // refresh(): wait for every asked replica
        size_t quorum = 0;          // refresh(): enough answers (0: every live one)
        std::set<NodeId> answered;  // refresh(): replicas that lack the session (nothing to give)
        // refresh(): each replica's state as it answered this node's pull; it
        // counts once the copy here covers it (its push of the difference came)
        std::map<NodeId, SessionState> replies;
        std::set<NodeId> asked;
        std::set<NodeId> missing;
        int64_t deadline_ms = 0;
        Callback done;
    };

    // A pull of `here` (id 0, or kPullAnswerEvenIfCurrent for a refresh).
    void send_pull(NodeId peer, const SessionState& here, uint64_t pull_id);
    // Sends each asked replica a pull of `here`, registers the waiter and checks it at once.
    void wait_for_pulls(FetchWaiter w, const SessionState& here, uint64_t pull_id, Callback done,
                        Completions& completions);
    // The live replicas other than this node: whom a read asks.
    std::set<NodeId> live_replicas(const std::string& session_id) const;
    // Degraded writes, fetch-on-miss: this node is one of the session's
    // replicas and every other replica either said it lacks the session
    // (`missing`) or is suspect (at least one). Such a replica would hold any
    // acknowledged change of the session but the last moment's, so the fetch
    // ends "not found" and the session may be created here (docs/cluster.md,
    // "Partitions").
    bool cut_off_replica(const std::string& session_id, const std::set<NodeId>& missing) const;
    Error taken_as_new(const std::string& session_id) const;

    SharedState& s_;
    std::vector<FetchWaiter> waiters_;
};

}  // namespace assistd::cluster::replication
