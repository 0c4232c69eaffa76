#include "cluster/replicator_push.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace assistd::cluster::replication {
namespace {

using state::crdt::VersionVector;

// CRDT operations `to` holds beyond `from`: the lamport distance per writer
// (exact while one replica writes a session; an upper bound otherwise).
uint64_t operations_between(const SessionState& from, const SessionState& to) {
    if (to.kind != SessionState::Kind::kLive) return 1;
    uint64_t ops = 0;
    for (const auto& [replica, lamport] : to.version.entries()) {
        const uint64_t had = from.kind == SessionState::Kind::kLive ? from.version.get(replica) : 0;
        if (lamport > had) ops += lamport - had;
    }
    return ops;
}

}  // namespace

std::vector<Status> apply_deltas(state::SessionStore& store, const Deltas& batch) {
    std::vector<std::pair<std::string_view, std::string_view>> items;
    std::vector<size_t> at;
    for (size_t i = 0; i < batch.items.size(); ++i) {
        if (batch.items[i].delta.empty()) continue;
        items.emplace_back(batch.items[i].session_id, batch.items[i].delta);
        at.push_back(i);
    }
    std::vector<Status> applied(batch.items.size(), Status{});
    auto results = store.apply_all(items);
    for (size_t k = 0; k < at.size(); ++k) applied[at[k]] = std::move(results[k]);
    return applied;
}

void Push::queue(const std::set<std::string>& written) {
    for (const auto& s : written) {
        for (NodeId p : s_.replicas_of(s)) {
            if (p != s_.identity.node_id) s_.links[p].pending.insert(s);
        }
    }
    pump_all();
}

void Push::pump_all() {
    for (auto& [peer, link] : s_.links) {
        if (!link.pending.empty()) pump(peer, link);
    }
}

void Push::pump(NodeId peer) {
    auto link = s_.links.find(peer);
    if (link != s_.links.end() && !link->second.pending.empty()) pump(peer, link->second);
}

void Push::pump(NodeId peer, PeerLink& link) {
    // A suspect peer gets nothing until it is heard from again: no point
    // filling the network with frames nobody acknowledges.
    if (!s_.membership.is_live(peer)) return;
    const auto& o = s_.options;
    const int64_t now = s_.now_ms();
    while (!link.pending.empty() && link.inflight.size() < o.max_inflight_batches &&
           link.inflight_bytes < o.max_inflight_bytes) {
        Deltas batch;
        InFlight f;
        f.sent_ms = now;
        size_t bytes = 0;
        while (!link.pending.empty() && bytes < o.max_batch_bytes) {
            const std::string s = *link.pending.begin();
            link.pending.erase(link.pending.begin());
            SessionState mine = s_.local_state(s);
            if (mine.kind == SessionState::Kind::kMissing) continue;
            auto known = link.known.find(s);
            SessionState since;
            if (known != link.known.end()) {
                if (covers(known->second, mine)) continue;  // the peer has all of it already
                since = known->second;
            }
            auto delta = s_.store.changes_since(
                s, since.kind == SessionState::Kind::kLive ? since.version : VersionVector{});
            if (!delta.ok()) continue;  // deleted or dropped meanwhile; the next round sees it
            bytes += s.size() + delta->size() + 8;
            f.operations += operations_between(since, mine);
            batch.items.push_back(DeltaItem{s, std::move(delta).value()});
            f.sent.push_back(std::move(mine));
        }
        if (batch.items.empty()) break;
        batch.id = next_batch_++;
        f.bytes = bytes;
        link.inflight_bytes += bytes;
        link.inflight.emplace(batch.id, std::move(f));
        ++s_.stats.batches_sent;
        s_.send(peer, std::move(batch));
    }
}

void Push::on_deltas(const Deltas& m, const std::vector<Status>& applied, Completions& done) {
    Ack ack;
    ack.id = m.id;
    for (size_t i = 0; i < m.items.size(); ++i) {
        const auto& d = m.items[i];
        // A push is no answer to a refresh by itself (it may have left before the
        // pull arrived): the reply with the peer's state is, once covered here.
        if (d.delta.empty()) {  // the peer does not hold it: an answer to a fetch
            reads_.note_not_held(m.from, d.session_id);
        } else if (applied[i].ok()) {
            ++s_.stats.deltas_applied;
        } else {
            ++s_.stats.apply_errors;
            spdlog::warn("cluster: delta for session '{}' from node {} rejected: {}", d.session_id,
                         format_node_id(m.from), applied[i].error().message);
        }
        ack.states.push_back(s_.local_state(d.session_id));
        reads_.check(d.session_id, done);
    }
    if (m.id != 0) s_.send_to(m.from_address, std::move(ack));  // id 0: a pull's answer, not acked
}

bool Push::satisfied(AckWaiter& w, Completions& done) {
    if (w.acked.size() < w.needed) return false;
    if (w.acked.size() < w.wanted) ++s_.stats.degraded_acks;
    done.push_back([cb = std::move(w.done)] { cb(Status{}); });
    return true;
}

void Push::note_peer_state(NodeId peer, const SessionState& state, Completions& done) {
    auto& link = s_.links[peer];
    link.known[state.session_id] = state;
    link.acked[state.session_id] = state;
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->session_id == state.session_id) {
            SessionState want{
                state.session_id,
                it->deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive, it->target};
            if (covers(state, want)) it->acked.insert(peer);
            if (satisfied(*it, done)) {
                it = waiters_.erase(it);
                continue;
            }
        }
        ++it;
    }
}

void Push::on_ack(const Ack& m, Completions& done) {
    auto& link = s_.links[m.from];
    std::map<std::string, SessionState> sent;
    auto f = link.inflight.find(m.id);
    if (f != link.inflight.end()) {
        for (auto& s : f->second.sent) sent[s.session_id] = s;
        link.inflight_bytes -= f->second.bytes;
        if (lag_samples_.size() < Replicator::kMaxLagSamples)
            lag_samples_.push_back({static_cast<double>(s_.now_ms() - f->second.sent_ms) / 1000.0,
                                    f->second.operations});
        link.inflight.erase(f);
        ++s_.stats.batches_acked;
    }
    for (const auto& state : m.states) {
        note_peer_state(m.from, state, done);
        // Id 0: the answer to a refresh's pull (batch acks carry their batch id).
        if (m.id == 0) reads_.note_reply(m.from, state, done);
        auto s = sent.find(state.session_id);
        // The peer could not apply all of it (it lost state, or a gap): send again from what it
        // has.
        if (s != sent.end() && !covers(state, s->second)) link.pending.insert(state.session_id);
    }
}

void Push::resend_unacknowledged(int64_t now) {
    for (auto& [peer, link] : s_.links) {
        for (auto it = link.inflight.begin(); it != link.inflight.end();) {
            if (now - it->second.sent_ms < s_.options.ack_timeout_ms) {
                ++it;
                continue;
            }
            for (const auto& s : it->second.sent) link.pending.insert(s.session_id);
            link.inflight_bytes -= it->second.bytes;
            it = link.inflight.erase(it);
            ++s_.stats.batches_resent;
        }
    }
}

void Push::recheck_waiters(int64_t now, Completions& done) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (s_.options.degraded_writes) it->needed = std::min(it->needed, acks_reachable());
        const bool hedge = now >= it->next_hedge_ms;
        if (hedge) it->next_hedge_ms = now + s_.options.heartbeat_interval_ms;
        if (satisfied(*it, done)) {
            it = waiters_.erase(it);
            continue;
        }
        widen(*it, hedge);
        ++it;
    }
}

void Push::widen(AckWaiter& w, bool hedge) {
    auto may_answer = [&] {
        size_t n = 0;
        for (NodeId p : w.targets)
            if (!w.acked.count(p) && s_.membership.is_live(p)) ++n;
        return n;
    };
    size_t promising = may_answer();
    // Most ticks nothing is missing: no placement to compute.
    if (w.acked.size() + promising >= w.needed && !hedge) return;
    bool extra = hedge;
    for (NodeId p : s_.preference_of(w.session_id)) {
        if (w.acked.size() + promising >= w.needed && !extra) break;
        if (p == s_.identity.node_id || w.targets.count(p) || !s_.membership.is_live(p)) continue;
        if (w.acked.size() + promising >= w.needed) extra = false;  // the hedge's one more
        w.targets.insert(p);
        ++promising;
        s_.links[p].pending.insert(w.session_id);
        pump(p);
    }
}

void Push::expire_waiters(int64_t now, Completions& done) {
    for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (now < it->deadline_ms) {
            ++it;
            continue;
        }
        ++s_.stats.ack_timeouts;
        auto err =
            make_error(ErrorCode::kResourceExhausted,
                       "replication: " + std::to_string(it->acked.size()) + " of " +
                           std::to_string(it->needed) + " replica acknowledgements for session '" +
                           it->session_id +
                           "' arrived in time; the write is durable here and will still replicate");
        done.push_back([cb = std::move(it->done), err] { cb(err); });
        it = waiters_.erase(it);
    }
}

size_t Push::acks_reachable() const {
    const size_t wanted = s_.acks_wanted();
    if (!s_.options.degraded_writes) return wanted;
    size_t live = 0;
    for (NodeId p : s_.members)
        if (p != s_.identity.node_id && s_.membership.is_live(p)) ++live;
    return std::min(wanted, live);
}

void Push::await_replication(const std::string& session_id, const VersionVector& version,
                             int64_t timeout_ms, Callback done, Completions& completions) {
    ++s_.stats.acks_waited;
    AckWaiter w;
    w.session_id = session_id;
    w.target = version;
    // A deletion is replicated once a peer holds the tombstone.
    const bool gone = s_.store.deleted(w.session_id);
    w.wanted = s_.acks_wanted();
    w.needed = acks_reachable();
    const int64_t now = s_.now_ms();
    w.deadline_ms = now + timeout_ms;
    w.next_hedge_ms = now + s_.options.heartbeat_interval_ms;
    const SessionState want{
        w.session_id, gone ? SessionState::Kind::kDeleted : SessionState::Kind::kLive, version};
    w.deleted = gone;
    // Any peer that holds it durably counts, replica or stand-in.
    for (const auto& [peer, link] : s_.links) {
        auto k = link.acked.find(w.session_id);
        if (k != link.acked.end() && covers(k->second, want)) w.acked.insert(peer);
    }
    for (NodeId p : s_.replicas_of(w.session_id))
        if (p != s_.identity.node_id) w.targets.insert(p);
    w.done = std::move(done);
    if (satisfied(w, completions)) return;
    widen(w, false);
    waiters_.push_back(std::move(w));
}

size_t Push::unacknowledged() const {
    std::set<std::string> sessions;
    for (const auto& [peer, link] : s_.links) {
        if (!s_.membership.is_live(peer)) continue;
        sessions.insert(link.pending.begin(), link.pending.end());
        for (const auto& [id, f] : link.inflight) {
            for (const auto& s : f.sent) sessions.insert(s.session_id);
        }
    }
    return sessions.size();
}

std::vector<ReplicationLagSample> Push::take_lag_samples() {
    std::vector<ReplicationLagSample> out;
    out.swap(lag_samples_);
    return out;
}

}  // namespace assistd::cluster::replication
