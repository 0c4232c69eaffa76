#pragma once
// One server node of a fleet, assembled: its identity (kept in the state
// directory), the durable session store opened with the identity's replica
// id, the gRPC transport, discovery, the replicator and its real-time driver,
// and the ReplicatedSessionStore the routes talk to. `assistd serve` builds
// one when it is given peers. gRPC stays behind this header.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cluster/kv_standby_link.h"
#include "cluster/membership.h"
#include "cluster/node_identity.h"
#include "cluster/peer_tls.h"
#include "cluster/rate_usage_link.h"
#include "cluster/replicator.h"
#include "common/clock.h"
#include "common/result.h"
#include "state/session_store.h"

namespace assistd::cluster {

struct FleetNodeOptions {
    std::string state_dir;          // required: the node id and the sessions live here
    // Empty: the name the peer certificate gives (TLS), else drawn once and
    // kept in state_dir; else hex or a name, which the certificate must name too.
    std::string node_id;
    std::string peers;              // "host:port,..." or "dns:NAME:PORT"
    std::string listen_address;     // gRPC bind, host:port (port 0: any free one)
    std::string advertise_address;  // where peers reach this node (an IP); empty: the listen address
    PeerTlsFiles tls;               // mutual TLS between peers (docs/trust.md); required unless...
    bool insecure = false;          // ... plaintext peers, explicitly (a trusted test network)
    size_t max_peer_links = 256;    // outgoing peer streams at most
    ReplicationOptions replication;
    int64_t write_ack_timeout_ms = 2000;  // a change waits this long for sync_acks replicas
    int64_t fetch_timeout_ms = 1000;      // fetch-on-miss gives up after this
    // Not ready until every discovered peer was heard from, or this long after start
    // (a lone first node, or a peer that is down, must not keep the node unready).
    int64_t join_wait_ms = 3000;
    KvStandbyLinkOptions kv_standby;      // where sessions' standby KV goes (kv_standby_link.h)
};

// The store of a node of a fleet: the durable store under it.
class FleetNode {
  public:
    // Checks the options (clear errors naming the flag), loads the identity,
    // opens the store, starts listening and replicating.
    static Result<std::unique_ptr<FleetNode>> start(const FleetNodeOptions& options, Clock& clock);
    ~FleetNode();  // stops replication, then closes the store
    FleetNode(const FleetNode&) = delete;
    FleetNode& operator=(const FleetNode&) = delete;

    // What the routes use: fetch-on-miss, changes wait for sync acks.
    state::SessionStore& store();
    // This node's own copies (the durable store under store()): no fetch,
    // refresh or quorum read. For reading what this node holds.
    state::SessionStore& local_store();
    const NodeIdentity& identity() const;
    std::string node_name() const;  // the node id in hex, as in X-Assistd-Node
    const std::string& advertise_address() const;
    int peer_port() const;  // the gRPC port actually bound

    // Heard from every discovered peer, or the join wait is over.
    bool joined() const;

    // The drain: leaves the membership (sessions held here are handed to the
    // other members) and waits, at most timeout_ms, until every local change
    // is acknowledged by the live replicas and every session's new replicas
    // confirmed holding it. Returns the sessions still waiting (0: nothing
    // is only here).
    size_t leave_and_flush(int64_t timeout_ms);
    // The drain's last step, after leave_and_flush: tells the peers this node
    // is gone (they take it out of placement at once) and waits, at most
    // timeout_ms, for each live peer to acknowledge. Returns the live peers
    // that did not (0: every one knows).
    size_t announce_departure(int64_t timeout_ms);

    ReplicationStats stats() const;
    struct LinkFigures {
        size_t open = 0;         // outgoing peer streams
        uint64_t refused = 0;    // frames dropped at the cap on streams
        bool authenticated = false;  // mutual TLS
    };
    LinkFigures links() const;
    // Standby KV: runs of a session's KV to its standby replicas, and those
    // peers send here (to `handler`, on the transport's threads).
    KvStandbyLink::SendOutcome send_standby_kv(std::string_view session_key, std::string_view head,
                                               std::string_view body);
    void set_standby_kv_handler(KvStandbyLink::Handler handler);
    void send_standby_gap_notice(NodeId to, std::string_view session_key);
    void set_standby_gap_handler(KvStandbyLink::GapHandler handler);
    KvStandbyLinkStats standby_kv_stats() const;
    // Rate-limit usage to and from the peers (rate_usage_link.h).
    RateUsageLink& rate_usage();
    std::vector<ReplicationLagSample> take_lag_samples();
    std::vector<PeerInfo> peers() const;
    size_t unacknowledged() const;
    Replicator::SessionCounts session_counts() const;

    struct Parts;

  private:
    explicit FleetNode(std::unique_ptr<Parts> parts);
    std::unique_ptr<Parts> parts_;
};

}  // namespace assistd::cluster
