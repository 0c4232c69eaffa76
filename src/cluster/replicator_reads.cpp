#include "cluster/replicator_reads.h"

#include <optional>

namespace assistd::cluster::replication {

std::set<NodeId> Reads::live_peers() const {
    std::set<NodeId> out;
    for (NodeId p : s_.members) {
        if (p != s_.identity.node_id && s_.membership.is_live(p)) out.insert(p);
    }
    return out;
}

size_t Reads::answers_needed() const {
    const size_t n = s_.possible_holders();
    const size_t w = 1 + s_.acks_wanted();
    return n > w ? n - w : 0;
}

Status Reads::outcome(const std::string& session_id) const {
    switch (s_.local_state(session_id).kind) {
        case SessionState::Kind::kLive:
            return {};
        case SessionState::Kind::kDeleted:
            return make_error(ErrorCode::kNotFound, "session '" + session_id + "' was deleted");
        case SessionState::Kind::kMissing:
            break;
    }
    return make_error(ErrorCode::kNotFound, "session '" + session_id + "' does not exist");
}

Error Reads::too_few(const ReadWaiter& w, size_t reachable) const {
    return make_error(
        ErrorCode::kResourceExhausted,
        "session '" + w.session_id + "' cannot be read safely: " + std::to_string(w.needed) +
            " other node" + (w.needed == 1 ? "" : "s") +
            " must answer so that every acknowledged change is seen (or an unknown id is known "
            "to be new), and only " +
            std::to_string(reachable) + " can; retry shortly");
}

void Reads::read(const std::string& session_id, int64_t timeout_ms, Callback done,
                 Completions& completions) {
    const SessionState here = s_.local_state(session_id);
    ++(here.kind == SessionState::Kind::kMissing ? s_.stats.fetches : s_.stats.refreshes);
    ReadWaiter w;
    w.session_id = session_id;
    w.deadline_ms = s_.now_ms() + timeout_ms;
    w.needed = answers_needed();
    w.asked = live_peers();
    // Degraded: a copy held here is served with what answers (docs/cluster.md, "Partitions").
    if (s_.options.degraded_writes && here.kind != SessionState::Kind::kMissing)
        w.needed = std::min(w.needed, w.asked.size());
    if (w.needed == 0) {
        completions.push_back([cb = std::move(done), st = outcome(session_id)] { cb(st); });
        return;
    }
    if (w.asked.size() < w.needed) {
        completions.push_back([cb = std::move(done), err = too_few(w, w.asked.size())] { cb(err); });
        return;
    }
    // Each peer pushes what this node lacks (or says it lacks the session) and
    // reports its state; the answer counts once the copy here covers that state.
    for (NodeId p : w.asked) {
        Pull pull;
        pull.id = kPullAnswerEvenIfCurrent;
        pull.states.push_back(here);
        s_.send(p, std::move(pull));
    }
    w.done = std::move(done);
    waiters_.push_back(std::move(w));
    check(session_id, completions);
}

void Reads::note_not_held(NodeId peer, const std::string& session_id) {
    for (auto& w : waiters_) {
        if (w.session_id == session_id && w.asked.count(peer)) w.not_held.insert(peer);
    }
}

void Reads::note_reply(NodeId peer, const SessionState& state, Completions& done) {
    // An ack of an earlier batch is no answer (it left before the pull arrived): only id 0 is.
    bool waiting = false;
    for (auto& w : waiters_) {
        if (w.session_id == state.session_id && w.asked.count(peer)) {
            w.replies[peer] = state;
            waiting = true;
        }
    }
    if (waiting) check(state.session_id, done);
}

void Reads::check(const std::string& session_id, Completions& done) {
    const SessionState here = s_.local_state(session_id);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->session_id != session_id) {
            ++it;
            continue;
        }
        size_t answered = 0, may_answer = 0;
        for (NodeId p : it->asked) {
            auto r = it->replies.find(p);
            if (it->not_held.count(p) || (r != it->replies.end() && covers(here, r->second)))
                ++answered;
            else if (s_.membership.is_live(p))
                ++may_answer;
        }
        std::optional<Status> result;
        if (answered >= it->needed)
            result = outcome(session_id);
        else if (answered + may_answer < it->needed)
            result = too_few(*it, answered + may_answer);
        if (result) {
            done.push_back([cb = std::move(it->done), st = *result] { cb(st); });
            it = waiters_.erase(it);
        } else {
            ++it;
        }
    }
}

void Reads::peer_departed(NodeId node, Completions& done) {
    std::set<std::string> sessions;
    for (auto& w : waiters_) {
        if (!w.asked.erase(node)) continue;
        w.not_held.erase(node);
        w.replies.erase(node);
        w.needed = std::min(w.needed, answers_needed());
        sessions.insert(w.session_id);
    }
    for (const auto& id : sessions) check(id, done);
}

void Reads::recheck(Completions& done) {
    std::set<std::string> sessions;
    for (const auto& w : waiters_) sessions.insert(w.session_id);
    for (const auto& id : sessions) check(id, done);
}

void Reads::expire(int64_t now, Completions& done) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (now < it->deadline_ms) {
            ++it;
            continue;
        }
        auto err = make_error(ErrorCode::kResourceExhausted,
                              "reading session '" + it->session_id + "': fewer than " +
                                  std::to_string(it->needed) +
                                  " other nodes answered in time, and the copy here may miss an "
                                  "acknowledged change; retry shortly");
        done.push_back([cb = std::move(it->done), err] { cb(err); });
        it = waiters_.erase(it);
    }
}

}  // namespace assistd::cluster::replication
