#pragma once
// Private to the replicator: the state its sub-protocols (push, anti-entropy,
// reads, departure) share. The Replicator façade owns it and holds its one
// lock around every call into a sub-protocol, so nothing here locks.
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/membership.h"
#include "cluster/messages.h"
#include "cluster/replicator.h"
#include "cluster/transport.h"
#include "common/clock.h"
#include "state/session_store.h"

namespace assistd::cluster::replication {

using Callback = Replicator::Callback;
// Callbacks collected under the lock and run once it is released, in order.
using Completions = std::vector<std::function<void()>>;

// One batch of deltas a peer has not acknowledged yet.
struct InFlight {
    int64_t sent_ms = 0;
    size_t bytes = 0;
    uint64_t operations = 0;
    std::vector<SessionState> sent;  // what each session was at when sent
};

// What this node knows of one peer and owes it.
struct PeerLink {
    std::map<std::string, SessionState> known;  // the peer's last reported state per session
    std::map<std::string, SessionState> acked;  // ... as reported by an ack (durable there)
    std::set<std::string> pending;              // sessions to push
    std::map<uint64_t, InFlight> inflight;      // by batch id
    size_t inflight_bytes = 0;
    std::map<std::string, SessionState> handed_off;  // offers the peer confirmed, at our state then
};

// True when `have` includes everything in `want`.
bool covers(const SessionState& have, const SessionState& want);
// Whether `node` is among `replicas`.
bool holds(const std::vector<NodeId>& replicas, NodeId node);
// What each session's batches on their way to a peer carry (the newest state
// sent): a session whose whole local state is already in flight needs no push.
std::map<std::string, SessionState> in_flight_states(const std::map<uint64_t, InFlight>& inflight);

struct SharedState {
    SharedState(NodeIdentity identity, std::string self_address, ReplicationOptions options,
                state::SessionStore& store, Transport& transport, Clock& clock);

    int64_t now_ms() const;
    // What this node holds of a session (the store is thread-safe).
    SessionState local_state(const std::string& session_id) const;
    // The session's replicas among the current members, best first.
    std::vector<NodeId> replicas_of(std::string_view session_id) const;
    // Every member for the session, best first: its replicas, then the nodes
    // that stand in for replicas that are down (placement over all members).
    std::vector<NodeId> preference_of(std::string_view session_id) const;
    // The acknowledgements a write waits for: sync_acks, capped by the other
    // nodes there may be (a fleet of one acknowledges alone).
    size_t acks_wanted() const;
    // The nodes that may hold copies: this one and every discovered peer that
    // has not departed (peers not heard from yet included).
    size_t possible_holders() const;
    // Sends to where `to` was last heard from (nothing when never heard).
    void send(NodeId to, Message message);
    // Stamps this node's header on the message and hands it to the transport.
    void send_to(const std::string& address, Message message);
    // Placement input changed: recompute the members and start the exchange
    // that moves sessions where they now belong.
    void members_changed();

    const NodeIdentity identity;
    const std::string self_address;
    const ReplicationOptions options;
    state::SessionStore& store;
    Transport& transport;
    Clock& clock;

    Membership membership;
    std::vector<NodeId> members;
    std::map<NodeId, PeerLink> links;
    ReplicationStats stats;
    int64_t next_anti_entropy_ms = 0;  // a placement change brings it forward to now
};

}  // namespace assistd::cluster::replication
