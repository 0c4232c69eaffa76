#include "cluster/replicator_anti_entropy.h"

#include <map>
#include <vector>

#include "cluster/placement.h"
#include "common/random.h"

namespace assistd::cluster::replication {
namespace {

using state::crdt::VersionVector;

constexpr size_t kBuckets = 256;

size_t bucket_of(const std::string& session_id) {
    return stable_hash(session_id) % kBuckets;
}

// A hash of what a node holds of a session: equal states, equal hashes.
uint64_t state_hash(const SessionState& s) {
    uint64_t h =
        stable_hash(s.session_id) ^ (static_cast<uint64_t>(s.kind) * 0x9e3779b97f4a7c15ull);
    for (const auto& [replica, lamport] : s.version.entries()) {
        h ^= replica + 0x632be59bd9b4e019ull;
        h = splitmix64(h);
        h ^= lamport;
        h = splitmix64(h);
    }
    return h;
}

// A store listing entry as a state; a live session with an empty version has nothing applied yet.
SessionState state_of(state::SessionVersion& v) {
    return SessionState{v.id, v.deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive,
                        std::move(v.version)};
}

bool nothing_applied(const SessionState& s) {
    return s.kind == SessionState::Kind::kLive && s.version.empty();
}

}  // namespace

void AntiEntropy::tick(int64_t now) {
    if (now < s_.next_anti_entropy_ms && reconnected_.empty()) return;
    // A (re)connected peer gets a digest at once; everyone gets one each interval.
    const int64_t interval = s_.options.anti_entropy_interval_ms;
    uint64_t r = splitmix64(rng_);
    const int64_t jitter = static_cast<int64_t>(r % static_cast<uint64_t>(interval / 4 + 1));
    s_.next_anti_entropy_ms = now + interval - interval / 8 + jitter;
    reconnected_.clear();
    round();
}

void AntiEntropy::round() {
    ++round_;
    std::vector<NodeId> live;
    for (NodeId p : s_.members) {
        if (p != s_.identity.node_id && s_.membership.is_live(p)) live.push_back(p);
    }
    if (live.empty()) return;
    std::map<NodeId, Digest> digests;
    for (NodeId p : live) {
        auto& d = digests[p];
        d.id = round_;
        d.buckets.assign(kBuckets, 0);
    }
    for (auto& v : s_.store.list_versions()) {
        SessionState s = state_of(v);
        if (nothing_applied(s)) continue;
        const auto reps = s_.replicas_of(s.session_id);
        const bool mine = holds(reps, s_.identity.node_id);
        const uint64_t h = state_hash(s);
        for (NodeId p : reps) {
            auto d = digests.find(p);
            if (d == digests.end()) continue;
            if (mine) {
                d->second.buckets[bucket_of(s.session_id)] += h;
                continue;
            }
            // Not ours any more: offer it until this replica confirms holding it.
            auto& handed = s_.links[p].handed_off;
            auto it = handed.find(s.session_id);
            if (it != handed.end() && covers(it->second, s)) continue;
            if (d->second.offers.size() < s_.options.max_offers_per_digest)
                d->second.offers.push_back(s);
        }
    }
    for (auto& [p, d] : digests) {
        ++s_.stats.digests_sent;
        s_.send(p, std::move(d));
    }
}

void AntiEntropy::on_digest(const Digest& m) {
    std::vector<uint64_t> mine(kBuckets, 0);
    std::map<size_t, std::vector<SessionState>> by_bucket;
    for (auto& v : s_.store.list_versions()) {
        SessionState s = state_of(v);
        if (nothing_applied(s)) continue;
        const auto reps = s_.replicas_of(s.session_id);
        if (!holds(reps, s_.identity.node_id) || !holds(reps, m.from)) continue;
        const size_t b = bucket_of(s.session_id);
        mine[b] += state_hash(s);
        by_bucket[b].push_back(std::move(s));
    }
    Summary summary;
    summary.id = m.id;
    for (size_t b = 0; b < kBuckets; ++b) {
        if (m.buckets.size() == kBuckets && m.buckets[b] == mine[b]) continue;
        summary.buckets.push_back(b);
        auto it = by_bucket.find(b);
        if (it != by_bucket.end()) {
            for (auto& s : it->second) summary.states.push_back(std::move(s));
        }
    }
    for (const auto& offer : m.offers) summary.replies.push_back(s_.local_state(offer.session_id));
    if (summary.buckets.empty() && summary.replies.empty()) return;
    s_.send_to(m.from_address, std::move(summary));
}

void AntiEntropy::on_summary(const Summary& m) {
    auto& link = s_.links[m.from];
    std::set<size_t> buckets(m.buckets.begin(), m.buckets.end());
    std::map<std::string, SessionState> theirs;
    for (const auto& s : m.states) theirs[s.session_id] = s;
    std::map<std::string, SessionState> ours;
    for (auto& v : s_.store.list_versions()) {
        if (!buckets.count(bucket_of(v.id))) continue;
        SessionState s = state_of(v);
        if (nothing_applied(s)) continue;
        const auto reps = s_.replicas_of(s.session_id);
        if (!holds(reps, s_.identity.node_id) || !holds(reps, m.from)) continue;
        ours[s.session_id] = std::move(s);
    }
    for (const auto& [id, s] : theirs) {
        if (!ours.count(id))
            ours[id] = s_.local_state(id);  // held outside the scope, or not at all
    }
    // A difference that a push already on its way explains is a race, not a repair.
    std::set<std::string> on_the_way(link.pending.begin(), link.pending.end());
    for (const auto& [batch, f] : link.inflight) {
        for (const auto& s : f.sent) on_the_way.insert(s.session_id);
    }
    const auto in_flight = in_flight_states(link.inflight);
    Pull pull;
    for (const auto& [id, mine] : ours) {
        auto t = theirs.find(id);
        const SessionState other =
            t != theirs.end() ? t->second : SessionState{id, SessionState::Kind::kMissing, {}};
        if (!covers(other, mine)) {
            const auto f = in_flight.find(id);
            if (f == in_flight.end() || !covers(f->second, mine)) {  // else a batch carries it all
                link.known[id] = other;
                link.pending.insert(id);
            }
            if (!on_the_way.count(id)) ++s_.stats.repairs_pushed;
        }
        if (!covers(mine, other)) {
            pull.states.push_back(mine);
            ++s_.stats.repairs_pulled;
        }
    }
    for (const auto& reply : m.replies) {
        link.known[reply.session_id] = reply;
        const SessionState mine = s_.local_state(reply.session_id);
        if (covers(reply, mine)) {
            if (!link.handed_off.count(reply.session_id)) ++s_.stats.handoffs_confirmed;
            link.handed_off[reply.session_id] = mine;
        } else {
            link.pending.insert(reply.session_id);
            ++s_.stats.repairs_pushed;
        }
    }
    if (!pull.states.empty()) s_.send_to(m.from_address, std::move(pull));
}

void AntiEntropy::on_pull(const Pull& m) {
    auto& link = s_.links[m.from];
    const auto on_the_way = in_flight_states(link.inflight);
    Deltas direct;   // id 0: not acknowledged
    Ack up_to_date;  // id 0, no batch: a refresh's answer, this node's states
    for (const auto& want : m.states) {
        const SessionState mine = s_.local_state(want.session_id);
        if (mine.kind == SessionState::Kind::kMissing) {
            direct.items.push_back(DeltaItem{want.session_id, ""});  // "not here"
            continue;
        }
        // A refresh's pull (a read waits for it): the answer is this node's
        // state, and what the puller lacks goes with it at once rather than
        // through the batches, which back-pressure may hold up for an ack
        // timeout (a peer that just restarted has batches of its old life in
        // flight). The puller counts the answer once it holds that state.
        if (m.id == kPullAnswerEvenIfCurrent) {
            up_to_date.states.push_back(mine);
            if (covers(want, mine)) continue;
            auto delta = s_.store.changes_since(
                want.session_id,
                want.kind == SessionState::Kind::kLive ? want.version : VersionVector{});
            if (delta.ok())
                direct.items.push_back(DeltaItem{want.session_id, std::move(delta).value()});
        }
        // The acknowledged path too (it retries when a frame is lost), unless
        // already on its way in full (a join pulls everything while the first
        // pushes are still in flight): the batch answers it; its ack timeout
        // re-sends it if lost.
        if (auto f = on_the_way.find(want.session_id);
            f != on_the_way.end() && covers(f->second, mine))
            continue;
        link.known[want.session_id] = want;
        link.pending.insert(want.session_id);
    }
    // The deltas first: the state that follows is then covered on arrival.
    if (!direct.items.empty()) s_.send_to(m.from_address, std::move(direct));
    if (!up_to_date.states.empty()) s_.send_to(m.from_address, std::move(up_to_date));
}

size_t AntiEntropy::unhanded() const {
    size_t count = 0;
    for (auto& v : s_.store.list_versions()) {
        const SessionState s = state_of(v);
        if (nothing_applied(s)) continue;
        const auto reps = s_.replicas_of(s.session_id);
        if (holds(reps, s_.identity.node_id)) continue;
        for (NodeId p : reps) {
            if (!s_.membership.is_live(p)) continue;
            const auto link = s_.links.find(p);
            if (link == s_.links.end()) {
                ++count;
                break;
            }
            const auto it = link->second.handed_off.find(s.session_id);
            if (it == link->second.handed_off.end() || !covers(it->second, s)) {
                ++count;
                break;
            }
        }
    }
    return count;
}

}  // namespace assistd::cluster::replication
