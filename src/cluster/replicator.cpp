#include "cluster/replicator.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "cluster/placement.h"
#include "common/random.h"

namespace assistd::cluster {
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

constexpr size_t kBuckets = 256;

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

// True when `have` includes everything in `want`.
bool covers(const SessionState& have, const SessionState& want) {
    if (have.kind == SessionState::Kind::kDeleted)
        return true;  // a deletion supersedes every change
    if (want.kind == SessionState::Kind::kMissing) return true;
    if (want.kind == SessionState::Kind::kDeleted) return false;
    return have.kind == SessionState::Kind::kLive && have.version.dominates(want.version);
}

// What each session's batches on their way to a peer carry (the newest state
// sent): a session whose whole local state is already in flight needs no push.
// `inflight` is a link's batches by batch id, each with the states it `sent`.
template <typename Inflight>
std::map<std::string, SessionState> in_flight_states(const Inflight& inflight) {
    std::map<std::string, SessionState> out;
    for (const auto& [id, batch] : inflight) {
        for (const auto& s : batch.sent) out[s.session_id] = s;  // later batches carry newer states
    }
    return out;
}

// "10.0.0.7:9090" -> "10.0.0.7", "[::1]:9090" -> "::1".
std::string host_of(const std::string& address) {
    if (!address.empty() && address.front() == '[') {
        const auto close = address.find(']');
        return close == std::string::npos ? std::string() : address.substr(1, close - 1);
    }
    return address.substr(0, address.rfind(':'));
}

// Why a decoded frame may not be taken from this origin ("" when it may).
std::string unauthorized(const MessageHeader& m, const FrameOrigin& origin) {
    if (origin.node && m.from != *origin.node)
        return "it claims node " + format_node_id(m.from) + " but the certificate names node " +
               format_node_id(*origin.node);
    if (!origin.host.empty() && host_of(m.from_address) != origin.host)
        return "it claims the address " + m.from_address + ", not on the connection's host " +
               origin.host;
    return {};
}

}  // namespace

Status validate(const ReplicationOptions& o) {
    auto bad = [](const std::string& m) {
        return make_error(ErrorCode::kInvalidArgument, "replication: " + m);
    };
    if (o.replication_factor < 1 || o.replication_factor > 16)
        return bad("replication factor must be 1 to 16");
    if (o.sync_acks < 0 || o.sync_acks > o.replication_factor - 1) {
        return bad("sync acks must be 0 to replication factor - 1 (got " +
                   std::to_string(o.sync_acks) + " with replication factor " +
                   std::to_string(o.replication_factor) + ")");
    }
    if (o.heartbeat_interval_ms < 1 || o.suspect_after_ms <= o.heartbeat_interval_ms) {
        return bad(
            "heartbeat interval must be at least 1 ms and shorter than the suspicion timeout");
    }
    if (o.anti_entropy_interval_ms < 1 || o.discovery_interval_ms < 1 || o.ack_timeout_ms < 1) {
        return bad("intervals and timeouts must be at least 1 ms");
    }
    if (o.max_batch_bytes < 1 || o.max_inflight_batches < 1 || o.max_inflight_bytes < 1) {
        return bad("batch and in-flight limits must be at least 1");
    }
    return {};
}

Replicator::Replicator(NodeIdentity identity, std::string self_address, ReplicationOptions options,
                       state::SessionStore& store, Transport& transport, Discovery& discovery,
                       Clock& clock, uint64_t seed)
    : identity_(identity),
      self_address_(std::move(self_address)),
      options_(options),
      store_(store),
      transport_(transport),
      discovery_(discovery),
      clock_(clock),
      rng_(seed),
      membership_(identity.node_id, self_address_, options.suspect_after_ms) {
    members_ = membership_.members();
}

Replicator::~Replicator() {
    if (subscription_) store_.unsubscribe(subscription_);
}

int64_t Replicator::now_ms() const {
    return clock_.now_mono_ns() / 1'000'000;
}

void Replicator::set_wakeup(std::function<void()> wakeup) {
    std::lock_guard<std::mutex> lock(dirty_mu_);
    wakeup_ = std::move(wakeup);
}

void Replicator::start() {
    subscription_ = store_.subscribe([this](const state::SessionEvent& ev) {
        // Remote changes came from a replica; anti-entropy covers the others.
        if (ev.remote) return;
        // The wakeup runs under dirty_mu_, so set_wakeup(nullptr) returning
        // means no call into the old wakeup is still in progress.
        std::lock_guard<std::mutex> lock(dirty_mu_);
        dirty_.insert(ev.session_id);
        if (wakeup_) wakeup_();
    });
    started_ = true;
    tick();
}

SessionState Replicator::local_state(const std::string& session_id) {
    SessionState s;
    s.session_id = session_id;
    if (store_.deleted(session_id)) {
        s.kind = SessionState::Kind::kDeleted;
        return s;
    }
    auto v = store_.version(session_id);
    if (v.ok() && !v->empty()) {
        s.kind = SessionState::Kind::kLive;
        s.version = std::move(v).value();
    }
    return s;
}

bool Replicator::owns(const std::vector<NodeId>& replicas, NodeId node) const {
    return std::find(replicas.begin(), replicas.end(), node) != replicas.end();
}

std::vector<NodeId> Replicator::replicas(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return place_replicas(session_id, members_, options_.replication_factor);
}

NodeId Replicator::primary(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto r = place_replicas(session_id, members_, options_.replication_factor);
    for (NodeId n : r) {
        if (membership_.is_live(n)) return n;
    }
    return r.empty() ? identity_.node_id : r.front();
}

std::vector<NodeId> Replicator::members() const {
    std::lock_guard<std::mutex> lock(mu_);
    return members_;
}

std::vector<PeerInfo> Replicator::peers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return membership_.peers();
}

ReplicationStats Replicator::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
}

std::vector<ReplicationLagSample> Replicator::take_lag_samples() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ReplicationLagSample> out;
    out.swap(lag_samples_);
    return out;
}

size_t Replicator::unacknowledged() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::set<std::string> sessions;
    for (const auto& [peer, link] : links_) {
        if (!membership_.is_live(peer)) continue;
        sessions.insert(link.pending.begin(), link.pending.end());
        for (const auto& [id, f] : link.inflight) {
            for (const auto& s : f.sent) sessions.insert(s.session_id);
        }
    }
    return sessions.size();
}

size_t Replicator::unhanded() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t count = 0;
    for (auto& v : store_.list_versions()) {
        SessionState s{v.id, v.deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive,
                       std::move(v.version)};
        if (s.kind == SessionState::Kind::kLive && s.version.empty()) continue;
        const auto reps = place_replicas(s.session_id, members_, options_.replication_factor);
        if (owns(reps, identity_.node_id)) continue;
        for (NodeId p : reps) {
            if (!membership_.is_live(p)) continue;
            const auto link = links_.find(p);
            if (link == links_.end()) {
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

Replicator::SessionCounts Replicator::session_counts() const {
    std::vector<NodeId> members;
    {
        // Only the members under the lock: a scrape must not hold up replication.
        std::lock_guard<std::mutex> lock(mu_);
        members = members_;
    }
    SessionCounts c;
    for (const auto& v : store_.list_versions()) {
        if (v.deleted || v.version.empty()) continue;
        ++c.held;
        if (owns(place_replicas(v.id, members, options_.replication_factor), identity_.node_id))
            ++c.replicated;
    }
    return c;
}

size_t Replicator::bucket_of(const std::string& session_id) const {
    return stable_hash(session_id) % kBuckets;
}

void Replicator::send_to(const std::string& address, Message message) {
    MessageHeader& header = header_of(message);
    header.from = identity_.node_id;
    header.from_address = self_address_;
    transport_.send(address, encode_message(message));
}

void Replicator::send(NodeId to, Message message) {
    auto address = membership_.address_of(to);
    if (address) send_to(*address, std::move(message));
}

void Replicator::leave() {
    std::lock_guard<std::mutex> lock(mu_);
    membership_.set_leaving(true);
    members_changed();
}

void Replicator::send_leave(NodeId peer) {
    Leave m;
    m.id = identity_.incarnation;
    send(peer, std::move(m));
}

void Replicator::announce_departure() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!membership_.leaving()) {
        membership_.set_leaving(true);
        members_changed();
    }
    departure_announced_ = true;
    departure_pending_.clear();
    for (const auto& p : membership_.peers()) {
        if (p.node_id != 0 && membership_.is_live(p.node_id)) departure_pending_.insert(p.node_id);
    }
    // Peers whose id is not known yet hear it too: they learn the id from the header.
    for (const auto& a : membership_.peer_addresses()) {
        Leave m;
        m.id = identity_.incarnation;
        send_to(a, std::move(m));
    }
    next_leave_ms_ = now_ms() + options_.heartbeat_interval_ms;
}

size_t Replicator::departure_unconfirmed() const {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (NodeId p : departure_pending_) {
        if (membership_.is_live(p)) ++n;
    }
    return n;
}

void Replicator::on_departure(NodeId node, uint64_t incarnation, Completions& done) {
    if (membership_.departed(node)) return;  // a resent leave
    const bool changed = membership_.depart(node, incarnation);
    if (!membership_.departed(node)) return;  // a leave of an older life
    if (changed) members_changed();
    ++stats_.departures;
    spdlog::info("cluster: node {} left the fleet (incarnation {})", format_node_id(node),
                 incarnation);
    // Waits that counted on it: a refresh stops waiting for it, a fetch asks
    // the session's replicas as placed now.
    std::set<std::string> refreshing;
    for (auto& w : fetch_waiters_) {
        if (!w.asked.count(node)) continue;
        if (w.refresh) {
            refreshing.insert(w.session_id);
            continue;
        }
        w.asked.erase(node);
        w.missing.erase(node);
        const SessionState here = local_state(w.session_id);
        for (NodeId p : place_replicas(w.session_id, members_, options_.replication_factor)) {
            if (p == identity_.node_id || !membership_.is_live(p) || w.asked.count(p)) continue;
            w.asked.insert(p);
            send_pull(p, here, 0);
        }
        refreshing.insert(w.session_id);
    }
    for (const auto& id : refreshing) check_fetch(id, done);
}

void Replicator::members_changed() {
    members_ = membership_.members();
    // A new replica set: start the exchange that moves sessions where they now belong.
    next_anti_entropy_ms_ = now_ms();
}

// ---------------------------------------------------------------- pushing

void Replicator::flush() {
    std::set<std::string> dirty;
    {
        std::lock_guard<std::mutex> lock(dirty_mu_);
        dirty.swap(dirty_);
    }
    if (dirty.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& s : dirty) {
        for (NodeId p : place_replicas(s, members_, options_.replication_factor)) {
            if (p != identity_.node_id) links_[p].pending.insert(s);
        }
    }
    pump_all();
}

void Replicator::pump_all() {
    for (auto& [peer, link] : links_) {
        if (!link.pending.empty()) pump(peer, link);
    }
}

void Replicator::pump(NodeId peer, PeerLink& link) {
    // A suspect peer gets nothing until it is heard from again: no point
    // filling the network with frames nobody acknowledges.
    if (!membership_.is_live(peer)) return;
    const int64_t now = now_ms();
    while (!link.pending.empty() && link.inflight.size() < options_.max_inflight_batches &&
           link.inflight_bytes < options_.max_inflight_bytes) {
        Deltas batch;
        InFlight f;
        f.sent_ms = now;
        size_t bytes = 0;
        while (!link.pending.empty() && bytes < options_.max_batch_bytes) {
            const std::string s = *link.pending.begin();
            link.pending.erase(link.pending.begin());
            SessionState mine = local_state(s);
            if (mine.kind == SessionState::Kind::kMissing) continue;
            auto known = link.known.find(s);
            SessionState since;
            if (known != link.known.end()) {
                if (covers(known->second, mine)) continue;  // the peer has all of it already
                since = known->second;
            }
            auto delta = store_.changes_since(
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
        ++stats_.batches_sent;
        send(peer, std::move(batch));
    }
}

// ---------------------------------------------------------------- receiving

void Replicator::receive(std::string_view frame, const FrameOrigin& origin) {
    auto decoded = decode_message(frame);
    if (!decoded.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.frames_rejected;
        spdlog::debug("cluster: dropped a frame: {}", decoded.error().message);
        return;
    }
    const Message& message = *decoded;
    const MessageHeader& m = header_of(message);
    if (auto why = unauthorized(m, origin); !why.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        // The first few in full, then every 1,000th: a flood must not flood the log too.
        if (stats_.frames_unauthorized++ % 1000 < 5)
            spdlog::warn("cluster: refused a {} frame from {}: {}", message_kind_name(kind_of(message)),
                         origin.host.empty() ? "a peer" : origin.host, why);
        return;
    }
    Completions done;
    // Deltas are applied without the replicator's lock: the store is
    // thread-safe and an apply waits for an fsync.
    // A whole batch is made durable together (one group commit, not one per session).
    std::vector<Status> applied;
    if (const auto* deltas = std::get_if<Deltas>(&message)) {
        std::vector<std::pair<std::string_view, std::string_view>> items;
        std::vector<size_t> at;
        for (size_t i = 0; i < deltas->items.size(); ++i) {
            if (deltas->items[i].delta.empty()) continue;
            items.emplace_back(deltas->items[i].session_id, deltas->items[i].delta);
            at.push_back(i);
        }
        applied.assign(deltas->items.size(), Status{});
        auto results = store_.apply_all(items);
        for (size_t k = 0; k < at.size(); ++k) applied[at[k]] = std::move(results[k]);
    }
    {
        std::lock_guard<std::mutex> lock(mu_);
        bool changed = false;
        if (m.from == identity_.node_id) {  // our own frame, via an address that is ours
            if (membership_.heard(m.from_address, m.from, now_ms(), changed) || changed)
                members_changed();
            return;
        }
        const uint64_t hello = std::holds_alternative<Heartbeat>(message) ? m.id : 0;
        if (membership_.heard(m.from_address, m.from, now_ms(), changed, hello)) {
            reconnected_.insert(m.from);
            spdlog::info("cluster: peer {:016x} at {} is live", m.from, m.from_address);
        }
        if (changed) members_changed();
        switch (kind_of(message)) {
            case MessageKind::kHeartbeat:
                break;
            case MessageKind::kLeave: {
                on_departure(m.from, m.id, done);
                LeaveAck ack;
                ack.id = m.id;
                send_to(m.from_address, std::move(ack));
                break;
            }
            case MessageKind::kLeaveAck:
                if (m.id == identity_.incarnation) departure_pending_.erase(m.from);
                break;
            case MessageKind::kDeltas: {
                const auto& items = std::get<Deltas>(message).items;
                Ack ack;
                ack.id = m.id;
                for (size_t i = 0; i < items.size(); ++i) {
                    const auto& d = items[i];
                    // A push is no answer to a refresh by itself (it may have left before the
                    // pull arrived): the reply with the peer's state is, once covered here.
                    if (d.delta.empty()) {  // the peer does not hold it: an answer to a fetch
                        for (auto& w : fetch_waiters_) {
                            if (w.session_id == d.session_id) w.missing.insert(m.from);
                            if (w.refresh && w.session_id == d.session_id && w.asked.count(m.from))
                                w.answered.insert(m.from);
                        }
                    } else if (applied[i].ok()) {
                        ++stats_.deltas_applied;
                    } else {
                        ++stats_.apply_errors;
                        spdlog::warn("cluster: delta for session '{}' from node {} rejected: {}",
                                     d.session_id, format_node_id(m.from),
                                     applied[i].error().message);
                    }
                    ack.states.push_back(local_state(d.session_id));
                    check_fetch(d.session_id, done);
                }
                if (m.id != 0) send_to(m.from_address, std::move(ack));
                break;
            }
            case MessageKind::kAck:
                on_ack(std::get<Ack>(message), done);
                break;
            case MessageKind::kDigest:
                on_digest(std::get<Digest>(message));
                break;
            case MessageKind::kSummary:
                on_summary(std::get<Summary>(message));
                break;
            case MessageKind::kPull:
                on_pull(std::get<Pull>(message));
                break;
        }
        auto link = links_.find(m.from);
        if (link != links_.end() && !link->second.pending.empty()) pump(m.from, link->second);
    }
    for (auto& f : done) f();
}

void Replicator::note_peer_state(NodeId peer, const SessionState& state, Completions& done) {
    auto& link = links_[peer];
    link.known[state.session_id] = state;
    link.acked[state.session_id] = state;
    for (auto it = ack_waiters_.begin(); it != ack_waiters_.end();) {
        if (it->session_id == state.session_id) {
            SessionState want{
                state.session_id,
                it->deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive, it->target};
            if (covers(state, want)) it->acked.insert(peer);
            if (it->acked.size() >= it->needed) {
                if (it->acked.size() < it->wanted) ++stats_.degraded_acks;
                done.push_back([cb = std::move(it->done)] { cb(Status{}); });
                it = ack_waiters_.erase(it);
                continue;
            }
        }
        ++it;
    }
}

void Replicator::on_ack(const Ack& m, Completions& done) {
    auto& link = links_[m.from];
    std::map<std::string, SessionState> sent;
    auto f = link.inflight.find(m.id);
    if (f != link.inflight.end()) {
        for (auto& s : f->second.sent) sent[s.session_id] = s;
        link.inflight_bytes -= f->second.bytes;
        if (lag_samples_.size() < kMaxLagSamples)
            lag_samples_.push_back(
                {static_cast<double>(now_ms() - f->second.sent_ms) / 1000.0, f->second.operations});
        link.inflight.erase(f);
        ++stats_.batches_acked;
    }
    for (const auto& state : m.states) {
        note_peer_state(m.from, state, done);
        // Id 0: the answer to a refresh's pull (batch acks carry their batch id).
        // An ack of an earlier batch is no answer: it left before the pull arrived.
        bool refreshing = false;
        for (auto& w : fetch_waiters_) {
            if (m.id == 0 && w.refresh && w.session_id == state.session_id &&
                w.asked.count(m.from)) {
                w.replies[m.from] = state;
                refreshing = true;
            }
        }
        if (refreshing) check_fetch(state.session_id, done);
        auto s = sent.find(state.session_id);
        // The peer could not apply all of it (it lost state, or a gap): send again from what it
        // has.
        if (s != sent.end() && !covers(state, s->second)) link.pending.insert(state.session_id);
    }
}

void Replicator::check_fetch(const std::string& session_id, Completions& done) {
    for (auto it = fetch_waiters_.begin(); it != fetch_waiters_.end();) {
        if (it->session_id != session_id) {
            ++it;
            continue;
        }
        const SessionState here = local_state(session_id);
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
                else if (membership_.is_live(p))
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
            it = fetch_waiters_.erase(it);
        } else {
            ++it;
        }
    }
}

// ---------------------------------------------------------------- anti-entropy

void Replicator::anti_entropy_round() {
    ++round_;
    std::vector<NodeId> live;
    for (NodeId p : members_) {
        if (p != identity_.node_id && membership_.is_live(p)) live.push_back(p);
    }
    if (live.empty()) return;
    std::map<NodeId, Digest> digests;
    for (NodeId p : live) {
        auto& d = digests[p];
        d.id = round_;
        d.buckets.assign(kBuckets, 0);
    }
    for (auto& v : store_.list_versions()) {
        SessionState s{v.id, v.deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive,
                       std::move(v.version)};
        if (s.kind == SessionState::Kind::kLive && s.version.empty())
            continue;  // nothing applied yet
        const auto reps = place_replicas(s.session_id, members_, options_.replication_factor);
        const bool mine = owns(reps, identity_.node_id);
        const uint64_t h = state_hash(s);
        for (NodeId p : reps) {
            auto d = digests.find(p);
            if (d == digests.end()) continue;
            if (mine) {
                d->second.buckets[bucket_of(s.session_id)] += h;
                continue;
            }
            // Not ours any more: offer it until this replica confirms holding it.
            auto& handed = links_[p].handed_off;
            auto it = handed.find(s.session_id);
            if (it != handed.end() && covers(it->second, s)) continue;
            if (d->second.offers.size() < options_.max_offers_per_digest)
                d->second.offers.push_back(s);
        }
    }
    for (auto& [p, d] : digests) {
        ++stats_.digests_sent;
        send(p, std::move(d));
    }
}

void Replicator::on_digest(const Digest& m) {
    std::vector<uint64_t> mine(kBuckets, 0);
    std::map<size_t, std::vector<SessionState>> by_bucket;
    for (auto& v : store_.list_versions()) {
        SessionState s{v.id, v.deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive,
                       std::move(v.version)};
        if (s.kind == SessionState::Kind::kLive && s.version.empty()) continue;
        const auto reps = place_replicas(s.session_id, members_, options_.replication_factor);
        if (!owns(reps, identity_.node_id) || !owns(reps, m.from)) continue;
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
    for (const auto& offer : m.offers) summary.replies.push_back(local_state(offer.session_id));
    if (summary.buckets.empty() && summary.replies.empty()) return;
    send_to(m.from_address, std::move(summary));
}

void Replicator::on_summary(const Summary& m) {
    auto& link = links_[m.from];
    std::set<size_t> buckets(m.buckets.begin(), m.buckets.end());
    std::map<std::string, SessionState> theirs;
    for (const auto& s : m.states) theirs[s.session_id] = s;
    std::map<std::string, SessionState> ours;
    for (auto& v : store_.list_versions()) {
        if (!buckets.count(bucket_of(v.id))) continue;
        SessionState s{v.id, v.deleted ? SessionState::Kind::kDeleted : SessionState::Kind::kLive,
                       std::move(v.version)};
        if (s.kind == SessionState::Kind::kLive && s.version.empty()) continue;
        const auto reps = place_replicas(s.session_id, members_, options_.replication_factor);
        if (!owns(reps, identity_.node_id) || !owns(reps, m.from)) continue;
        ours[s.session_id] = std::move(s);
    }
    for (const auto& [id, s] : theirs) {
        if (!ours.count(id)) ours[id] = local_state(id);  // held outside the scope, or not at all
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
            if (!on_the_way.count(id)) ++stats_.repairs_pushed;
        }
        if (!covers(mine, other)) {
            pull.states.push_back(mine);
            ++stats_.repairs_pulled;
        }
    }
    for (const auto& reply : m.replies) {
        link.known[reply.session_id] = reply;
        const SessionState mine = local_state(reply.session_id);
        if (covers(reply, mine)) {
            if (!link.handed_off.count(reply.session_id)) ++stats_.handoffs_confirmed;
            link.handed_off[reply.session_id] = mine;
        } else {
            link.pending.insert(reply.session_id);
            ++stats_.repairs_pushed;
        }
    }
    if (!pull.states.empty()) send_to(m.from_address, std::move(pull));
}

void Replicator::on_pull(const Pull& m) {
    auto& link = links_[m.from];
    const auto on_the_way = in_flight_states(link.inflight);
    Deltas direct;   // id 0: not acknowledged
    Ack up_to_date;  // id 0, no batch: a refresh's answer, this node's states
    for (const auto& want : m.states) {
        const SessionState mine = local_state(want.session_id);
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
            auto delta = store_.changes_since(want.session_id, want.kind == SessionState::Kind::kLive
                                                                   ? want.version
                                                                   : VersionVector{});
            if (delta.ok()) direct.items.push_back(DeltaItem{want.session_id, std::move(delta).value()});
        }
        // The acknowledged path too (it retries when a frame is lost), unless
        // already on its way in full (a join pulls everything while the first
        // pushes are still in flight): the batch answers it; its ack timeout
        // re-sends it if lost.
        if (auto f = on_the_way.find(want.session_id); f != on_the_way.end() && covers(f->second, mine))
            continue;
        link.known[want.session_id] = want;
        link.pending.insert(want.session_id);
    }
    // The deltas first: the state that follows is then covered on arrival.
    if (!direct.items.empty()) send_to(m.from_address, std::move(direct));
    if (!up_to_date.states.empty()) send_to(m.from_address, std::move(up_to_date));
}

// ---------------------------------------------------------------- timers and waits

void Replicator::tick() {
    bool discover = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        discover = now_ms() >= next_discovery_ms_;
        if (discover) next_discovery_ms_ = now_ms() + options_.discovery_interval_ms;
    }
    Result<std::vector<std::string>> found = std::vector<std::string>{};
    if (discover) found = discovery_.peers();  // may block on DNS: outside the lock
    Completions done;
    {
        std::lock_guard<std::mutex> lock(mu_);
        const int64_t now = now_ms();
        if (discover) {
            if (found.ok()) {
                if (membership_.set_discovered(*found)) members_changed();
            } else {
                spdlog::warn("cluster: {}; keeping the last known peers", found.error().message);
            }
        }
        for (NodeId p : membership_.update_health(now))
            spdlog::warn("cluster: peer {:016x} is suspect (not heard from for {} ms)", p,
                         options_.suspect_after_ms);
        if (now >= next_heartbeat_ms_) {
            next_heartbeat_ms_ = now + options_.heartbeat_interval_ms;
            for (const auto& a : membership_.peer_addresses()) {
                Heartbeat hb;
                hb.id = identity_.incarnation;  // a departed node's next life is back
                send_to(a, std::move(hb));
            }
        }
        if (departure_announced_ && now >= next_leave_ms_) {
            next_leave_ms_ = now + options_.heartbeat_interval_ms;
            for (NodeId p : departure_pending_) {
                if (membership_.is_live(p)) send_leave(p);
            }
        }
        // Batches nobody acknowledged: forget them and push their sessions again.
        for (auto& [peer, link] : links_) {
            for (auto it = link.inflight.begin(); it != link.inflight.end();) {
                if (now - it->second.sent_ms < options_.ack_timeout_ms) {
                    ++it;
                    continue;
                }
                for (const auto& s : it->second.sent) link.pending.insert(s.session_id);
                link.inflight_bytes -= it->second.bytes;
                it = link.inflight.erase(it);
                ++stats_.batches_resent;
            }
        }
        expire_waiters(now, done);
        if (now >= next_anti_entropy_ms_ || !reconnected_.empty()) {
            // A (re)connected peer gets a digest at once; everyone gets one each interval.
            uint64_t r = splitmix64(rng_);
            const int64_t jitter = static_cast<int64_t>(
                r % static_cast<uint64_t>(options_.anti_entropy_interval_ms / 4 + 1));
            next_anti_entropy_ms_ = now + options_.anti_entropy_interval_ms -
                                    options_.anti_entropy_interval_ms / 8 + jitter;
            reconnected_.clear();
            anti_entropy_round();
        }
        pump_all();
    }
    for (auto& f : done) f();
}

void Replicator::check_ack_waiters(Completions& done) {
    if (!options_.degraded_writes) return;
    for (auto it = ack_waiters_.begin(); it != ack_waiters_.end();) {
        it->needed = std::min(it->needed, acks_reachable(it->session_id));
        if (it->acked.size() >= it->needed) {
            if (it->acked.size() < it->wanted) ++stats_.degraded_acks;
            done.push_back([cb = std::move(it->done)] { cb(Status{}); });
            it = ack_waiters_.erase(it);
        } else {
            ++it;
        }
    }
}

bool Replicator::expire_waiters(int64_t now, Completions& done) {
    bool any = false;
    // A replica that turned suspect no longer holds a degraded write up.
    check_ack_waiters(done);
    // A refresh stops waiting for a replica that turned suspect meanwhile (so
    // does a fetch by a replica cut off from the others, with degraded writes).
    std::set<std::string> refreshing;
    for (const auto& w : fetch_waiters_) {
        if (w.refresh || options_.degraded_writes) refreshing.insert(w.session_id);
    }
    for (const auto& id : refreshing) check_fetch(id, done);
    for (auto it = ack_waiters_.begin(); it != ack_waiters_.end();) {
        if (now < it->deadline_ms) {
            ++it;
            continue;
        }
        ++stats_.ack_timeouts;
        auto err =
            make_error(ErrorCode::kResourceExhausted,
                       "replication: " + std::to_string(it->acked.size()) + " of " +
                           std::to_string(it->needed) + " replica acknowledgements for session '" +
                           it->session_id +
                           "' arrived in time; the write is durable here and will still replicate");
        done.push_back([cb = std::move(it->done), err] { cb(err); });
        it = ack_waiters_.erase(it);
        any = true;
    }
    for (auto it = fetch_waiters_.begin(); it != fetch_waiters_.end();) {
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
            local_state(it->session_id).kind == SessionState::Kind::kLive)
            result = {};
        else if (it->refresh && it->quorum > 0)
            result = make_error(ErrorCode::kResourceExhausted,
                                "reading session '" + it->session_id + "': fewer than " +
                                    std::to_string(it->quorum) +
                                    " other replicas answered in time, and the copy here may "
                                    "miss an acknowledged change; retry shortly");
        done.push_back([cb = std::move(it->done), result] { cb(result); });
        it = fetch_waiters_.erase(it);
        any = true;
    }
    return any;
}

size_t Replicator::acks_needed(const std::string& session_id) const {
    const auto reps = place_replicas(session_id, members_, options_.replication_factor);
    const size_t peers =
        membership_.discovered_peer_count();  // counts peers whose id is not known yet
    const size_t r = static_cast<size_t>(options_.replication_factor);
    // A writer outside the replica set waits for one more ack, so an acknowledged
    // change is on sync_acks + 1 replicas either way (what read_quorum relies on).
    const bool replica = owns(reps, identity_.node_id);
    const size_t cap = replica ? std::min(r - 1, peers) : std::min(r, peers);
    const size_t wanted = static_cast<size_t>(options_.sync_acks) + (replica ? 0 : 1);
    return std::min(wanted, cap);
}

bool Replicator::cut_off_replica(const std::string& session_id,
                                 const std::set<NodeId>& missing) const {
    if (!options_.degraded_writes) return false;
    const auto reps = place_replicas(session_id, members_, options_.replication_factor);
    if (!owns(reps, identity_.node_id))
        return false;  // another replica may hold it: not ours to say
    bool any_suspect = false;
    for (NodeId p : reps) {
        if (p == identity_.node_id || missing.count(p)) continue;
        if (membership_.health(p) != PeerHealth::kSuspect) return false;  // may still answer
        any_suspect = true;
    }
    return any_suspect;
}

Error Replicator::taken_as_new(const std::string& session_id) const {
    return make_error(ErrorCode::kNotFound,
                      "session '" + session_id +
                          "' is on none of its reachable replicas (the others are cut off): "
                          "taken as new");
}

size_t Replicator::acks_reachable(const std::string& session_id) const {
    const size_t wanted = acks_needed(session_id);
    if (!options_.degraded_writes) return wanted;
    // The replicas there can be (as in acks_needed: peers not heard from yet
    // count, so a node that just started still waits), less those known to be
    // down.
    const auto reps = place_replicas(session_id, members_, options_.replication_factor);
    const size_t peers = membership_.discovered_peer_count();
    const size_t r = static_cast<size_t>(options_.replication_factor);
    const size_t possible =
        owns(reps, identity_.node_id) ? std::min(r - 1, peers) : std::min(r, peers);
    size_t suspect = 0;
    for (NodeId p : reps) {
        if (p != identity_.node_id && membership_.health(p) == PeerHealth::kSuspect) ++suspect;
    }
    return std::min(wanted, possible > suspect ? possible - suspect : 0);
}

void Replicator::await_replication(std::string_view session_id, const VersionVector& version,
                                   int64_t timeout_ms, Callback done) {
    Completions completions;
    {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.acks_waited;
        AckWaiter w;
        w.session_id.assign(session_id);
        w.target = version;
        // A deletion is replicated once a peer holds the tombstone.
        const bool gone = store_.deleted(w.session_id);
        w.wanted = acks_needed(w.session_id);
        w.needed = acks_reachable(w.session_id);
        w.deadline_ms = now_ms() + timeout_ms;
        const SessionState want{
            w.session_id, gone ? SessionState::Kind::kDeleted : SessionState::Kind::kLive, version};
        w.deleted = gone;
        for (const auto& [peer, link] : links_) {
            auto k = link.acked.find(w.session_id);
            if (k != link.acked.end() && covers(k->second, want)) w.acked.insert(peer);
        }
        if (w.acked.size() >= w.needed) {
            if (w.acked.size() < w.wanted) ++stats_.degraded_acks;
            completions.push_back([cb = std::move(done)] { cb(Status{}); });
        } else {
            w.done = std::move(done);
            ack_waiters_.push_back(std::move(w));
        }
    }
    for (auto& f : completions) f();
}

void Replicator::fetch(std::string_view session_id, int64_t timeout_ms, Callback done) {
    Completions completions;
    {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.fetches;
        FetchWaiter w;
        w.session_id.assign(session_id);
        w.deadline_ms = now_ms() + timeout_ms;
        for (NodeId p : place_replicas(w.session_id, members_, options_.replication_factor)) {
            if (p != identity_.node_id && membership_.is_live(p)) w.asked.insert(p);
        }
        const SessionState here = local_state(w.session_id);
        const auto reps = place_replicas(w.session_id, members_, options_.replication_factor);
        const bool only_here =
            reps.empty() || (reps.size() == 1 && reps.front() == identity_.node_id);
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
            auto err = make_error(
                ErrorCode::kResourceExhausted,
                "session '" + w.session_id +
                    "' is not here and none of its replicas is reachable; retry shortly");
            completions.push_back([cb = std::move(done), err] { cb(err); });
        } else {
            wait_for_pulls(std::move(w), here, 0, std::move(done), completions);
        }
    }
    for (auto& f : completions) f();
}

void Replicator::refresh(std::string_view session_id, int64_t timeout_ms, size_t quorum,
                         Callback done) {
    Completions completions;
    {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.refreshes;
        FetchWaiter w;
        w.session_id.assign(session_id);
        w.refresh = true;
        w.quorum = quorum;
        w.deadline_ms = now_ms() + timeout_ms;
        for (NodeId p : place_replicas(w.session_id, members_, options_.replication_factor)) {
            if (p != identity_.node_id && membership_.is_live(p)) w.asked.insert(p);
        }
        // Each replica pushes what this node lacks, or says it has nothing newer.
        const SessionState here = local_state(w.session_id);
        wait_for_pulls(std::move(w), here, kPullAnswerEvenIfCurrent, std::move(done), completions);
    }
    for (auto& f : completions) f();
}

void Replicator::send_pull(NodeId peer, const SessionState& here, uint64_t pull_id) {
    Pull pull;
    pull.id = pull_id;
    pull.states.push_back(here);
    send(peer, std::move(pull));
}

void Replicator::wait_for_pulls(FetchWaiter w, const SessionState& here, uint64_t pull_id, Callback done,
                                Completions& completions) {
    for (NodeId p : w.asked) send_pull(p, here, pull_id);
    const std::string session_id = w.session_id;
    w.done = std::move(done);
    fetch_waiters_.push_back(std::move(w));
    check_fetch(session_id, completions);
}

size_t Replicator::read_quorum(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string id(session_id);
    const auto reps = place_replicas(id, members_, options_.replication_factor);
    if (!owns(reps, identity_.node_id)) return 0;
    // An acknowledged change is on acks_needed + 1 replicas (its writer's copy
    // or one more ack): this copy plus r - 1 - acks_needed others meet one of them.
    const size_t acked_copies = acks_needed(id) + 1;
    return reps.size() >= acked_copies ? reps.size() - acked_copies : 0;
}

bool Replicator::replicates(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return owns(place_replicas(std::string(session_id), members_, options_.replication_factor),
                identity_.node_id);
}

}  // namespace assistd::cluster
