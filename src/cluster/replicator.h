#pragma once
// The replication logic of one node, independent of any transport or thread:
// the owner feeds it frames (receive), time (tick) and a nudge after local
// writes (flush); everything it does is a function of those calls, the store
// and the injected clock and seed, so a simulation replays a whole fleet.
//
//  * Placement: a session lives on R replicas, by rendezvous hashing over the
//    members (placement.h).
//  * Pushing: local changes go to the session's other replicas as CRDT deltas
//    (changes since the version the peer last acknowledged), batched, with at
//    most max_inflight_batches / max_inflight_bytes unacknowledged per peer.
//    An ack carries the peer's version after applying; a batch not acked in
//    ack_timeout_ms is sent again (recomputed from the last ack).
//  * Waiting: await_replication completes once sync_acks peers report a
//    version that includes the write (or fails at the deadline): replicas,
//    or while one is down or slow, stand-ins that keep the change and hand it
//    to the replicas later (a sloppy quorum with hinted hand-off).
//  * Reading: a read hears from enough nodes that one of them holds every
//    acknowledged change (N - W of the others), or fails.
//  * Anti-entropy: every anti_entropy_interval_ms and whenever a peer comes
//    (back) to life, a digest of per-session versions (bucket hashes) goes to
//    each live peer; buckets that differ are exchanged in detail and each side
//    pushes what the other lacks or pulls what it lacks. Sessions a node holds
//    but no longer owns (the replica set changed) are offered to their
//    replicas until they confirm holding them: the hand-off.
//  * Failure detection: heartbeats; a peer not heard from in
//    suspect_after_ms is suspect, pushes to it wait until it is back.
//
// This class is the façade: it owns the membership, the per-peer links and
// the lock, and routes each decoded frame to one sub-protocol
// (replicator_push, _anti_entropy, _reads, _departure; docs/cluster.md).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/membership.h"
#include "cluster/messages.h"
#include "cluster/node_identity.h"
#include "cluster/transport.h"
#include "common/clock.h"
#include "common/result.h"
#include "state/session_store.h"

namespace assistd::cluster {

// The sub-protocols behind the façade (replicator_*.h, private to src/cluster).
namespace replication {
struct SharedState;
class Reads;
class Push;
class AntiEntropy;
class Departure;
}  // namespace replication

struct ReplicationOptions {
    int replication_factor = 3;  // R: replicas per session (all nodes when fewer)
    int sync_acks = 1;           // remote acks a write waits for (capped by the peers there are)
    // Degraded writes: with fewer live peers than sync_acks, a write waits
    // only for those (possibly none) and a read of a session held here only
    // for the live peers' answers, so a node cut off from the others keeps
    // serving the sessions it holds (alone until the partition heals), at
    // the price of the guarantee that every answer saw every acknowledged
    // change. Off: such writes and reads fail (503). docs/cluster.md, "Partitions".
    bool degraded_writes = false;
    int64_t heartbeat_interval_ms = 200;
    int64_t suspect_after_ms = 1000;
    int64_t anti_entropy_interval_ms = 1000;
    int64_t discovery_interval_ms = 5000;
    int64_t ack_timeout_ms = 1000;
    size_t max_batch_bytes = 256 * 1024;
    size_t max_inflight_batches = 4;
    size_t max_inflight_bytes = 1024 * 1024;
    size_t max_offers_per_digest = 512;
};
// Checks ranges; the message says which option is wrong and what it may be.
Status validate(const ReplicationOptions& options);

struct ReplicationStats {
    uint64_t batches_sent = 0;
    uint64_t batches_acked = 0;
    uint64_t batches_resent = 0;  // ack timeouts
    uint64_t deltas_applied = 0;
    uint64_t apply_errors = 0;
    uint64_t frames_rejected = 0;      // undecodable frames
    uint64_t frames_unauthorized = 0;  // a sender that is not who or where the frame says
    uint64_t digests_sent = 0;
    uint64_t repairs_pushed = 0;  // anti-entropy found a peer lacking something
    uint64_t repairs_pulled = 0;  // ... or this node lacking something
    uint64_t handoffs_confirmed = 0;
    uint64_t departures = 0;  // peers that announced they leave
    uint64_t fetches = 0;    // reads of sessions not held here
    uint64_t refreshes = 0;  // reads of sessions held here
    uint64_t acks_waited = 0;
    uint64_t ack_timeouts = 0;
    uint64_t degraded_acks = 0;  // writes acknowledged with fewer than sync_acks (suspect replicas)
};

// One acknowledged batch: how long it was in flight (sent to acked) and how
// many CRDT operations it carried (lamport distance from what the peer had,
// summed over its sessions; a deletion counts one).
struct ReplicationLagSample {
    double seconds = 0;
    uint64_t operations = 0;
};

class Replicator {
  public:
    using Callback = std::function<void(Status)>;

    // `options` must have passed validate().
    Replicator(NodeIdentity identity, std::string self_address, ReplicationOptions options,
               state::SessionStore& store, Transport& transport, Discovery& discovery, Clock& clock,
               uint64_t seed);
    ~Replicator();
    Replicator(const Replicator&) = delete;
    Replicator& operator=(const Replicator&) = delete;

    // Subscribes to the store, runs discovery and says hello to the peers.
    void start();

    // One frame from the transport, from the sender the transport proved:
    // a frame whose sender node is not the one the origin's certificate names,
    // or whose sender address is not on the connection's host, is dropped
    // unread (counted in frames_unauthorized).
    void receive(std::string_view frame, const FrameOrigin& origin);
    // The same with nothing proved (a simulated network).
    void receive(std::string_view frame) { receive(frame, FrameOrigin{}); }
    // Timers: heartbeats, suspicion, discovery, anti-entropy, resends, deadlines.
    void tick();
    // Pushes the sessions written locally since the last flush.
    void flush();
    // Called on the writer's thread when flush() has work; must be quick and
    // must not call into the replicator (it runs under an internal lock).
    void set_wakeup(std::function<void()> wakeup);

    // Completes with ok once sync_acks peers hold `version` of the session (at
    // once when there are no peers to ask), or with kResourceExhausted after
    // timeout_ms. Callbacks run on whichever thread drives the replicator.
    void await_replication(std::string_view session_id, const state::crdt::VersionVector& version,
                           int64_t timeout_ms, Callback done);
    // A read that sees every acknowledged change (replicator_reads.h): pulls
    // the session from every live peer and completes once enough answered —
    // ok when it is here then, kNotFound when it is deleted or none of them
    // holds it — or fails with kResourceExhausted when too few can answer
    // (at once) or did by timeout_ms.
    void read(std::string_view session_id, int64_t timeout_ms, Callback done);
    // How many other nodes a read hears from: N - W, where N counts the nodes
    // that may hold copies and W the copies of an acknowledged change.
    size_t read_quorum() const;
    // Whether this node is one of the session's replicas.
    bool replicates(std::string_view session_id) const;

    // Leaves the membership (the drain path): from now on every session held
    // here is handed to its replicas among the remaining members.
    void leave();
    // The end of a drain, once the hand-off is done: tells every peer this
    // life of the node is going away (a Leave frame, resent each heartbeat
    // interval until acknowledged), so peers take it out of placement at once
    // instead of after suspect_after_ms of silence. Calls leave() first if
    // needed. A later life rejoins with its first heartbeat.
    void announce_departure();
    // Live peers that have not acknowledged the departure yet.
    size_t departure_unconfirmed() const;

    std::vector<NodeId> replicas(std::string_view session_id) const;
    // Where a session's standby KV goes: the addresses of up to `copies` live
    // replicas other than this node, in placement order (the first is the node
    // that serves the session if this one dies).
    std::vector<std::string> standby_addresses(std::string_view session_id, size_t copies) const;
    // Where a peer is reached, when it is known.
    std::optional<std::string> address_of(NodeId node) const;
    // The first live replica: where a session is best served.
    NodeId primary(std::string_view session_id) const;
    std::vector<NodeId> members() const;
    std::vector<PeerInfo> peers() const;
    // Sessions whose latest local changes some live replica has not acknowledged.
    size_t unacknowledged() const;
    // Sessions held here that this node does not replicate (after leave(): every
    // one) and that some live replica has not confirmed holding: the hand-off
    // a drain waits for besides unacknowledged().
    size_t unhanded() const;
    ReplicationStats stats() const;
    // Live sessions held here, and how many of them this node replicates
    // (placement puts it in their replica set): a joining node holds its
    // share once the second reaches what placement assigns it.
    struct SessionCounts {
        size_t held = 0;
        size_t replicated = 0;
    };
    SessionCounts session_counts() const;
    // The lag samples since the last call (at most kMaxLagSamples are kept between calls).
    std::vector<ReplicationLagSample> take_lag_samples();
    static constexpr size_t kMaxLagSamples = 4096;
    NodeId node_id() const;
    const std::string& address() const;

  private:
    // The membership part of a frame: the sender is heard (a reconnect starts
    // anti-entropy with it). False for this node's own frame.
    bool note_sender(const Message& message);
    // Hands the decoded frame to the one sub-protocol of its kind.
    void route(const Message& message, const std::vector<Status>& applied,
               std::vector<std::function<void()>>& done);
    void send_heartbeats(int64_t now);

    Discovery& discovery_;
    // One lock for the shared state and every sub-protocol: a frame's handler
    // reaches across them (a delta answers a read, an ack completes writes and
    // reads), so finer locks would need an order and could reorder sends.
    mutable std::mutex mu_;
    std::unique_ptr<replication::SharedState> state_;
    std::unique_ptr<replication::Reads> reads_;
    std::unique_ptr<replication::Push> push_;
    std::unique_ptr<replication::AntiEntropy> anti_entropy_;
    std::unique_ptr<replication::Departure> departure_;
    int64_t next_heartbeat_ms_ = 0;
    int64_t next_discovery_ms_ = 0;

    std::mutex dirty_mu_;
    std::set<std::string> dirty_;
    std::function<void()> wakeup_;
    uint64_t subscription_ = 0;
};

}  // namespace assistd::cluster
