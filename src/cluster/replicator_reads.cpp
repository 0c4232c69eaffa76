#include "cluster/replicator_reads.h"

namespace assistd::cluster::replication {

std::set<NodeId> Reads::live_replicas(const std::string& session_id) const {
    std::set<NodeId> out;
    for (NodeId p : s_.replicas_of(session_id)) {
        if (p != s_.identity.node_id && s_.membership.is_live(p)) out.insert(p);
    }
    return out;
}

void Reads::fetch(const std::string& session_id, int64_t timeout_ms, Callback done,
                  Completions& completions) {
    ++s_.stats.fetches;
    FetchWaiter w;
    w.session_id = session_id;
    w.deadline_ms = s_.now_ms() + timeout_ms;
    w.asked = live_replicas(w.session_id);
    const SessionState here = s_.local_state(w.session_id);
    const auto reps = s_.replicas_of(w.session_id);
    const bool only_here =
        reps.empty() || (reps.size() == 1 && reps.front() == s_.identity.node_id);
    if (only_here && here.kind == SessionState::Kind::kMissing) {
        // No other node could hold it (a fleet of one).
        auto err =
            make_error(ErrorCode::kNotFound, "session '" + w.session_id + "' does not exist");
        completions.push_back([cb = std::move(done), err] { cb(err); });
    } else if (w.asked.empty() && here.kind == SessionState::Kind::kMissing &&
               cut_off_replica(w.session_id, {})) {
        auto err = taken_as_new(w.session_id);
        completions.push_back([cb = std::move(done), err] { cb(err); });
    } else if (w.asked.empty() && here.kind == SessionState::Kind::kMissing) {
        auto err =
            make_error(ErrorCode::kResourceExhausted,
                       "session '" + w.session_id +
                           "' is not here and none of its replicas is reachable; retry shortly");
        completions.push_back([cb = std::move(done), err] { cb(err); });
    } else {
        wait_for_pulls(std::move(w), here, 0, std::move(done), completions);
    }
}

void Reads::refresh(const std::string& session_id, int64_t timeout_ms, size_t quorum, Callback done,
                    Completions& completions) {
    ++s_.stats.refreshes;
    FetchWaiter w;
    w.session_id = session_id;
    w.refresh = true;
    w.quorum = quorum;
    w.deadline_ms = s_.now_ms() + timeout_ms;
    w.asked = live_replicas(w.session_id);
    // Each replica pushes what this node lacks, or says it has nothing newer.
    const SessionState here = s_.local_state(w.session_id);
    wait_for_pulls(std::move(w), here, kPullAnswerEvenIfCurrent, std::move(done), completions);
}

void Reads::send_pull(NodeId peer, const SessionState& here, uint64_t pull_id) {
    Pull pull;
    pull.id = pull_id;
    pull.states.push_back(here);
    s_.send(peer, std::move(pull));
}

void Reads::wait_for_pulls(FetchWaiter w, const SessionState& here, uint64_t pull_id, Callback done,
                           Completions& completions) {
    for (NodeId p : w.asked) send_pull(p, here, pull_id);
    const std::string session_id = w.session_id;
    w.done = std::move(done);
    waiters_.push_back(std::move(w));
    check(session_id, completions);
}

void Reads::note_not_held(NodeId peer, const std::string& session_id) {
    for (auto& w : waiters_) {
        if (w.session_id == session_id) w.missing.insert(peer);
        if (w.refresh && w.session_id == session_id && w.asked.count(peer)) w.answered.insert(peer);
    }
}

void Reads::note_reply(NodeId peer, const SessionState& state, Completions& done) {
    // An ack of an earlier batch is no answer (it left before the pull arrived): only id 0 is.
    bool refreshing = false;
    for (auto& w : waiters_) {
        if (w.refresh && w.session_id == state.session_id && w.asked.count(peer)) {
            w.replies[peer] = state;
            refreshing = true;
        }
    }
    if (refreshing) check(state.session_id, done);
}

void Reads::check(const std::string& session_id, Completions& done) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->session_id != session_id) {
            ++it;
            continue;
        }
        const SessionState here = s_.local_state(session_id);
        Status result;
        bool finished = true;
        if (it->refresh) {
            // A replica has answered once it said it lacks the session, or once the
            // copy here covers the state it reported in reply to the pull (what it
            // lacked here has arrived). Done once `quorum` replicas answered, or no
            // live replica asked is still to answer.
            size_t answered = 0;
            for (NodeId p : it->asked) {
                auto r = it->replies.find(p);
                if (it->answered.count(p) || (r != it->replies.end() && covers(here, r->second)))
                    ++answered;
                else if (s_.membership.is_live(p))
                    finished = false;
            }
            if (it->quorum > 0 && answered >= it->quorum) finished = true;
            if (here.kind != SessionState::Kind::kLive)
                result =
                    make_error(ErrorCode::kNotFound, "session '" + session_id + "' does not exist");
        } else if (here.kind == SessionState::Kind::kLive) {
            result = {};
        } else if (here.kind == SessionState::Kind::kDeleted) {
            result = make_error(ErrorCode::kNotFound, "session '" + session_id + "' was deleted");
        } else if (it->missing.size() >= it->asked.size()) {
            result = make_error(ErrorCode::kNotFound,
                                "session '" + session_id + "' does not exist on any replica");
        } else if (cut_off_replica(session_id, it->missing)) {
            result = taken_as_new(session_id);
        } else {
            finished = false;
        }
        if (finished) {
            done.push_back([cb = std::move(it->done), result] { cb(result); });
            it = waiters_.erase(it);
        } else {
            ++it;
        }
    }
}

void Reads::peer_departed(NodeId node, Completions& done) {
    std::set<std::string> refreshing;
    for (auto& w : waiters_) {
        if (!w.asked.count(node)) continue;
        if (w.refresh) {
            refreshing.insert(w.session_id);
            continue;
        }
        w.asked.erase(node);
        w.missing.erase(node);
        const SessionState here = s_.local_state(w.session_id);
        for (NodeId p : s_.replicas_of(w.session_id)) {
            if (p == s_.identity.node_id || !s_.membership.is_live(p) || w.asked.count(p)) continue;
            w.asked.insert(p);
            send_pull(p, here, 0);
        }
        refreshing.insert(w.session_id);
    }
    for (const auto& id : refreshing) check(id, done);
}

void Reads::recheck(Completions& done) {
    std::set<std::string> refreshing;
    for (const auto& w : waiters_) {
        if (w.refresh || s_.options.degraded_writes) refreshing.insert(w.session_id);
    }
    for (const auto& id : refreshing) check(id, done);
}

void Reads::expire(int64_t now, Completions& done) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (now < it->deadline_ms) {
            ++it;
            continue;
        }
        Status result = make_error(
            ErrorCode::kResourceExhausted,
            "fetching session '" + it->session_id + "' from its replicas timed out; retry shortly");
        // A refresh that heard nothing serves the copy here rather than nothing;
        // a quorum read does not: its copy may lack an acknowledged change.
        if (it->refresh && it->quorum == 0 &&
            s_.local_state(it->session_id).kind == SessionState::Kind::kLive)
            result = {};
        else if (it->refresh && it->quorum > 0)
            result = make_error(ErrorCode::kResourceExhausted,
                                "reading session '" + it->session_id + "': fewer than " +
                                    std::to_string(it->quorum) +
                                    " other replicas answered in time, and the copy here may "
                                    "miss an acknowledged change; retry shortly");
        done.push_back([cb = std::move(it->done), result] { cb(result); });
        it = waiters_.erase(it);
    }
}

bool Reads::cut_off_replica(const std::string& session_id, const std::set<NodeId>& missing) const {
    if (!s_.options.degraded_writes) return false;
    const auto reps = s_.replicas_of(session_id);
    if (!holds(reps, s_.identity.node_id))
        return false;  // another replica may hold it: not ours to say
    bool any_suspect = false;
    for (NodeId p : reps) {
        if (p == s_.identity.node_id || missing.count(p)) continue;
        if (s_.membership.health(p) != PeerHealth::kSuspect) return false;  // may still answer
        any_suspect = true;
    }
    return any_suspect;
}

Error Reads::taken_as_new(const std::string& session_id) const {
    return make_error(ErrorCode::kNotFound,
                      "session '" + session_id +
                          "' is on none of its reachable replicas (the others are cut off): "
                          "taken as new");
}

}  // namespace assistd::cluster::replication
