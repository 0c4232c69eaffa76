#include "cluster/replicator_state.h"

#include <algorithm>

#include "cluster/placement.h"

namespace assistd::cluster::replication {

bool covers(const SessionState& have, const SessionState& want) {
    if (have.kind == SessionState::Kind::kDeleted)
        return true;  // a deletion supersedes every change
    if (want.kind == SessionState::Kind::kMissing) return true;
    if (want.kind == SessionState::Kind::kDeleted) return false;
    return have.kind == SessionState::Kind::kLive && have.version.dominates(want.version);
}

bool holds(const std::vector<NodeId>& replicas, NodeId node) {
    return std::find(replicas.begin(), replicas.end(), node) != replicas.end();
}

std::map<std::string, SessionState> in_flight_states(const std::map<uint64_t, InFlight>& inflight) {
    std::map<std::string, SessionState> out;
    for (const auto& [id, batch] : inflight) {
        for (const auto& s : batch.sent) out[s.session_id] = s;  // later batches carry newer states
    }
    return out;
}

SharedState::SharedState(NodeIdentity identity_, std::string self_address_,
                         ReplicationOptions options_, state::SessionStore& store_,
                         Transport& transport_, Clock& clock_)
    : identity(identity_),
      self_address(std::move(self_address_)),
      options(options_),
      store(store_),
      transport(transport_),
      clock(clock_),
      membership(identity_.node_id, self_address, options_.suspect_after_ms) {
    members = membership.members();
}

int64_t SharedState::now_ms() const {
    return clock.now_mono_ns() / 1'000'000;
}

SessionState SharedState::local_state(const std::string& session_id) const {
    SessionState s;
    s.session_id = session_id;
    if (store.deleted(session_id)) {
        s.kind = SessionState::Kind::kDeleted;
        return s;
    }
    auto v = store.version(session_id);
    if (v.ok() && !v->empty()) {
        s.kind = SessionState::Kind::kLive;
        s.version = std::move(v).value();
    }
    return s;
}

std::vector<NodeId> SharedState::replicas_of(std::string_view session_id) const {
    return place_replicas(session_id, members, options.replication_factor);
}

std::vector<NodeId> SharedState::preference_of(std::string_view session_id) const {
    return place_replicas(session_id, members, static_cast<int>(members.size()));
}

size_t SharedState::acks_wanted() const {
    return std::min(static_cast<size_t>(options.sync_acks), membership.possible_peer_count());
}

size_t SharedState::possible_holders() const {
    return 1 + membership.possible_peer_count();
}

void SharedState::send_to(const std::string& address, Message message) {
    MessageHeader& header = header_of(message);
    header.from = identity.node_id;
    header.from_address = self_address;
    transport.send(address, encode_message(message));
}

void SharedState::send(NodeId to, Message message) {
    auto address = membership.address_of(to);
    if (address) send_to(*address, std::move(message));
}

void SharedState::members_changed() {
    members = membership.members();
    next_anti_entropy_ms = now_ms();
}

}  // namespace assistd::cluster::replication
