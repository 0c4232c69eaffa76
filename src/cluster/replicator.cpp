#include "cluster/replicator.h"

#include <spdlog/spdlog.h>

#include "cluster/peer_address.h"
#include "cluster/placement.h"
#include "cluster/replicator_anti_entropy.h"
#include "cluster/replicator_departure.h"
#include "cluster/replicator_push.h"
#include "cluster/replicator_reads.h"
#include "cluster/replicator_state.h"

namespace assistd::cluster {
namespace {

using replication::Completions;
using replication::holds;


// Why a decoded frame may not be taken from this origin ("" when it may).
std::string unauthorized(const MessageHeader& m, const FrameOrigin& origin) {
    if (origin.node && m.from != *origin.node)
        return "it claims node " + format_node_id(m.from) + " but the certificate names node " +
               format_node_id(*origin.node);
    // Compared as IPs: "FD00::0001" is "fd00::1".
    auto as_ip = [](const std::string& host) { return canonical_ip(host).value_or(host); };
    if (!origin.host.empty() && as_ip(address_host(m.from_address)) != as_ip(origin.host))
        return "it claims the address " + m.from_address + ", not on the connection's host " +
               origin.host;
    return {};
}

// One lambda per message kind for std::visit.
template <typename... Handlers>
struct Overloaded : Handlers... {
    using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

void run(Completions& done) {
    for (auto& f : done) f();
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
    : discovery_(discovery),
      state_(std::make_unique<replication::SharedState>(identity, std::move(self_address), options,
                                                        store, transport, clock)),
      reads_(std::make_unique<replication::Reads>(*state_)),
      push_(std::make_unique<replication::Push>(*state_, *reads_)),
      anti_entropy_(std::make_unique<replication::AntiEntropy>(*state_, seed)),
      departure_(std::make_unique<replication::Departure>(*state_, *reads_)) {}

Replicator::~Replicator() {
    if (subscription_) state_->store.unsubscribe(subscription_);
}

NodeId Replicator::node_id() const {
    return state_->identity.node_id;
}

const std::string& Replicator::address() const {
    return state_->self_address;
}

void Replicator::set_wakeup(std::function<void()> wakeup) {
    std::lock_guard<std::mutex> lock(dirty_mu_);
    wakeup_ = std::move(wakeup);
}

void Replicator::start() {
    subscription_ = state_->store.subscribe([this](const state::SessionEvent& ev) {
        // Remote changes came from a replica; anti-entropy covers the others.
        if (ev.remote) return;
        // The wakeup runs under dirty_mu_, so set_wakeup(nullptr) returning
        // means no call into the old wakeup is still in progress.
        std::lock_guard<std::mutex> lock(dirty_mu_);
        dirty_.insert(ev.session_id);
        if (wakeup_) wakeup_();
    });
    tick();
}

// ---------------------------------------------------------------- receiving

void Replicator::receive(std::string_view frame, const FrameOrigin& origin) {
    auto decoded = decode_message(frame);
    if (!decoded.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        ++state_->stats.frames_rejected;
        spdlog::debug("cluster: dropped a frame: {}", decoded.error().message);
        return;
    }
    const Message& message = *decoded;
    if (auto why = unauthorized(header_of(message), origin); !why.empty()) {
        std::lock_guard<std::mutex> lock(mu_);
        // The first few in full, then every 1,000th: a flood must not flood the log too.
        if (state_->stats.frames_unauthorized++ % 1000 < 5)
            spdlog::warn("cluster: refused a {} frame from {}: {}",
                         message_kind_name(kind_of(message)),
                         origin.host.empty() ? "a peer" : origin.host, why);
        return;
    }
    // A whole batch is made durable together (one group commit), outside the
    // lock: the store is thread-safe and an apply waits for an fsync.
    std::vector<Status> applied;
    if (const auto* deltas = std::get_if<Deltas>(&message))
        applied = replication::apply_deltas(state_->store, *deltas);
    Completions done;
    {
        std::lock_guard<std::mutex> lock(mu_);
        if (!note_sender(message)) return;
        route(message, applied, done);
        push_->pump(header_of(message).from);  // an ack or a pull may have freed or queued work
    }
    run(done);
}

bool Replicator::note_sender(const Message& message) {
    auto& s = *state_;
    const MessageHeader& m = header_of(message);
    bool changed = false;
    if (m.from == s.identity.node_id) {  // our own frame, via an address that is ours
        if (s.membership.heard(m.from_address, m.from, s.now_ms(), changed) || changed)
            s.members_changed();
        return false;
    }
    // A heartbeat names the sender's life: a later one brings a departed node back.
    const uint64_t hello = std::holds_alternative<Heartbeat>(message) ? m.id : 0;
    if (s.membership.heard(m.from_address, m.from, s.now_ms(), changed, hello)) {
        anti_entropy_->peer_reconnected(m.from);
        spdlog::info("cluster: peer {:016x} at {} is live", m.from, m.from_address);
    }
    if (changed) s.members_changed();
    return true;
}

void Replicator::route(const Message& message, const std::vector<Status>& applied,
                       Completions& done) {
    std::visit(Overloaded{
                   [](const Heartbeat&) {},  // being heard is all it says
                   [&](const Deltas& m) { push_->on_deltas(m, applied, done); },
                   [&](const Ack& m) { push_->on_ack(m, done); },
                   [&](const Digest& m) { anti_entropy_->on_digest(m); },
                   [&](const Summary& m) { anti_entropy_->on_summary(m); },
                   [&](const Pull& m) { anti_entropy_->on_pull(m); },
                   [&](const Leave& m) { departure_->on_leave(m, done); },
                   [&](const LeaveAck& m) { departure_->on_leave_ack(m); },
               },
               message);
}

// ---------------------------------------------------------------- timers and writes

void Replicator::tick() {
    bool discover = false;
    {
        std::lock_guard<std::mutex> lock(mu_);
        discover = state_->now_ms() >= next_discovery_ms_;
        if (discover) next_discovery_ms_ = state_->now_ms() + state_->options.discovery_interval_ms;
    }
    Result<std::vector<std::string>> found = std::vector<std::string>{};
    if (discover) found = discovery_.peers();  // may block on DNS: outside the lock
    Completions done;
    {
        std::lock_guard<std::mutex> lock(mu_);
        auto& s = *state_;
        const int64_t now = s.now_ms();
        if (discover) {
            if (found.ok()) {
                if (s.membership.set_discovered(*found)) s.members_changed();
            } else {
                spdlog::warn("cluster: {}; keeping the last known peers", found.error().message);
            }
        }
        for (NodeId p : s.membership.update_health(now))
            spdlog::warn("cluster: peer {:016x} is suspect (not heard from for {} ms)", p,
                         s.options.suspect_after_ms);
        send_heartbeats(now);
        departure_->tick(now);
        push_->resend_unacknowledged(now);
        // Health may have changed: writes find stand-ins, reads stop waiting for suspects.
        push_->recheck_waiters(now, done);
        reads_->recheck(done);
        push_->expire_waiters(now, done);
        reads_->expire(now, done);
        anti_entropy_->tick(now);
        push_->pump_all();
    }
    run(done);
}

void Replicator::send_heartbeats(int64_t now) {
    if (now < next_heartbeat_ms_) return;
    next_heartbeat_ms_ = now + state_->options.heartbeat_interval_ms;
    for (const auto& a : state_->membership.peer_addresses()) {
        Heartbeat hb;
        hb.id = state_->identity.incarnation;  // a departed node's next life is back
        state_->send_to(a, std::move(hb));
    }
}

void Replicator::flush() {
    std::set<std::string> dirty;
    {
        std::lock_guard<std::mutex> lock(dirty_mu_);
        dirty.swap(dirty_);
    }
    if (dirty.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    push_->queue(dirty);
}

// ---------------------------------------------------------------- the sub-protocols' calls

void Replicator::await_replication(std::string_view session_id,
                                   const state::crdt::VersionVector& version, int64_t timeout_ms,
                                   Callback done) {
    Completions completions;
    {
        std::lock_guard<std::mutex> lock(mu_);
        push_->await_replication(std::string(session_id), version, timeout_ms, std::move(done),
                                 completions);
    }
    run(completions);
}

void Replicator::read(std::string_view session_id, int64_t timeout_ms, Callback done) {
    Completions completions;
    {
        std::lock_guard<std::mutex> lock(mu_);
        reads_->read(std::string(session_id), timeout_ms, std::move(done), completions);
    }
    run(completions);
}

size_t Replicator::read_quorum() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reads_->answers_needed();
}

void Replicator::leave() {
    std::lock_guard<std::mutex> lock(mu_);
    departure_->leave();
}

void Replicator::announce_departure() {
    std::lock_guard<std::mutex> lock(mu_);
    departure_->announce();
}

size_t Replicator::departure_unconfirmed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return departure_->unconfirmed();
}

size_t Replicator::unacknowledged() const {
    std::lock_guard<std::mutex> lock(mu_);
    return push_->unacknowledged();
}

size_t Replicator::unhanded() const {
    std::lock_guard<std::mutex> lock(mu_);
    return anti_entropy_->unhanded();
}

std::vector<ReplicationLagSample> Replicator::take_lag_samples() {
    std::lock_guard<std::mutex> lock(mu_);
    return push_->take_lag_samples();
}

// ---------------------------------------------------------------- placement and membership

bool Replicator::replicates(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return holds(state_->replicas_of(session_id), state_->identity.node_id);
}

std::vector<NodeId> Replicator::replicas(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_->replicas_of(session_id);
}

std::vector<std::string> Replicator::standby_addresses(std::string_view session_id, size_t copies) const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (NodeId n : state_->replicas_of(session_id)) {
        if (out.size() >= copies) break;
        if (n == state_->identity.node_id || !state_->membership.is_live(n)) continue;
        if (auto address = state_->membership.address_of(n)) out.push_back(std::move(*address));
    }
    return out;
}

std::optional<std::string> Replicator::address_of(NodeId node) const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_->membership.address_of(node);
}

NodeId Replicator::primary(std::string_view session_id) const {
    std::lock_guard<std::mutex> lock(mu_);
    const auto r = state_->replicas_of(session_id);
    for (NodeId n : r) {
        if (state_->membership.is_live(n)) return n;
    }
    return r.empty() ? state_->identity.node_id : r.front();
}

std::vector<NodeId> Replicator::members() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_->members;
}

std::vector<PeerInfo> Replicator::peers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_->membership.peers();
}

ReplicationStats Replicator::stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_->stats;
}

Replicator::SessionCounts Replicator::session_counts() const {
    std::vector<NodeId> members;
    {
        // Only the members under the lock: a scrape must not hold up replication.
        std::lock_guard<std::mutex> lock(mu_);
        members = state_->members;
    }
    const int factor = state_->options.replication_factor;
    SessionCounts c;
    for (const auto& v : state_->store.list_versions()) {
        if (v.deleted || v.version.empty()) continue;
        ++c.held;
        if (holds(place_replicas(v.id, members, factor), state_->identity.node_id)) ++c.replicated;
    }
    return c;
}

}  // namespace assistd::cluster
