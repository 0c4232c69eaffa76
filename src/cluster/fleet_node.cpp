#include "cluster/fleet_node.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "cluster/driver.h"
#include "cluster/peer_address.h"
#include "cluster/grpc_transport.h"
#include "cluster/replicated_session_store.h"
#include "state/durable_session_store.h"

namespace assistd::cluster {

struct FleetNode::Parts {
    Clock* clock = nullptr;
    NodeIdentity identity;
    std::string advertise;
    int64_t started_ms = 0;
    int64_t join_wait_ms = 0;
    SystemResolver resolver;
    std::unique_ptr<Discovery> discovery;
    std::unique_ptr<state::DurableSessionStore> local;
    std::unique_ptr<GrpcTransport> transport;
    std::unique_ptr<Replicator> replicator;
    std::unique_ptr<KvStandbyLink> kv_standby;
    std::unique_ptr<RateUsageLink> rate_usage;
    std::unique_ptr<ReplicationDriver> driver;
    std::unique_ptr<ReplicatedSessionStore> store;
};

namespace {

// "host:port" with a port; the flag named in the error.
Status check_address(const std::string& address, const char* flag) {
    const auto colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
        return make_error(ErrorCode::kInvalidArgument,
                          std::string(flag) + " '" + address + "' must be host:port");
    const std::string port = address.substr(colon + 1);
    if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
        std::stoi(port) > 65535)
        return make_error(ErrorCode::kInvalidArgument,
                          std::string(flag) + " '" + address + "': the port must be 0..65535");
    return {};
}

bool wildcard_host(const std::string& address) {
    const std::string host = address.substr(0, address.rfind(':'));
    return host == "0.0.0.0" || host == "[::]" || host == "::" || host.empty();
}

// Peers take a frame only from the host its sender address names (the
// connection's source IP), so the address a node advertises must be an IP.
bool ip_literal_host(const std::string& address) {
    return canonical_ip(address_host(address)).has_value();
}

// Mutual TLS or an explicit --peer-insecure; with TLS the node's id is its
// certificate's name. Returns the --node-id to load (may be empty).
Result<std::string> check_peer_security(const FleetNodeOptions& o) {
    if (o.insecure) {
        if (!o.tls.empty())
            return make_error(ErrorCode::kInvalidArgument,
                              "--peer-insecure and --peer-tls-* contradict each other: give one");
        return o.node_id;
    }
    if (o.tls.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "--peers needs the peers to authenticate each other: give "
                          "--peer-tls-cert, --peer-tls-key and --peer-tls-ca (a certificate "
                          "naming this node, URI assistd-node:<name>, and the fleet's CA; "
                          "docs/trust.md), or --peer-insecure on a network only the fleet can reach");
    auto name = check_peer_tls_files(o.tls);
    if (!name.ok()) return name.error();
    if (o.node_id.empty()) return *name;
    auto wanted = node_id_from_name(o.node_id);
    if (!wanted.ok()) return make_error(wanted.error().code, "--node-id: " + wanted.error().message);
    if (*wanted != *node_id_from_name(*name))
        return make_error(ErrorCode::kInvalidArgument,
                          "--node-id " + o.node_id + " is not the node --peer-tls-cert names (" +
                              *name + "): peers would refuse every frame of this node");
    return o.node_id;
}

}  // namespace

Result<std::unique_ptr<FleetNode>> FleetNode::start(const FleetNodeOptions& o, Clock& clock) {
    if (o.state_dir.empty())
        return make_error(
            ErrorCode::kInvalidArgument,
            "a node of a fleet needs --state-dir: its node id and its sessions must "
            "outlive a restart (give --state-dir DIR, or no --peers for a single node)");
    if (o.peers.empty())
        return make_error(ErrorCode::kInvalidArgument, "--peers is empty: name the fleet's peers");
    if (auto st = check_address(o.listen_address, "--listen-peer"); !st.ok()) return st.error();
    if (!o.advertise_address.empty()) {
        if (auto st = check_address(o.advertise_address, "--advertise-peer"); !st.ok())
            return st.error();
    } else if (wildcard_host(o.listen_address)) {
        return make_error(ErrorCode::kInvalidArgument,
                          "--listen-peer " + o.listen_address +
                              " binds every address: give --advertise-peer HOST:PORT, the address "
                              "peers reach this node at (in Kubernetes: $(POD_IP):PORT)");
    }
    if (!o.advertise_address.empty() ? !ip_literal_host(o.advertise_address)
                                     : !ip_literal_host(o.listen_address))
        return make_error(ErrorCode::kInvalidArgument,
                          (o.advertise_address.empty() ? "--listen-peer " + o.listen_address
                                                       : "--advertise-peer " + o.advertise_address) +
                              ": peers are advertised by IP address (peers check that a frame "
                              "comes from the host it names)");
    auto node_name = check_peer_security(o);
    if (!node_name.ok()) return node_name.error();
    if (auto st = validate(o.replication); !st.ok()) return st.error();
    if (o.write_ack_timeout_ms <= 0 || o.fetch_timeout_ms <= 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "--replication-ack-timeout-ms and --fetch-timeout-ms must be positive");

    auto parts = std::make_unique<Parts>();
    parts->clock = &clock;
    parts->join_wait_ms = o.join_wait_ms;
    parts->discovery = nullptr;
    auto discovery = make_discovery(o.peers, parts->resolver);
    if (!discovery.ok())
        return make_error(discovery.error().code, "--peers: " + discovery.error().message);
    parts->discovery = std::move(discovery).value();

    Result<NodeIdentity> identity = make_error(ErrorCode::kInternal, "no identity");
    if (node_name->empty()) {
        std::random_device rd;
        NodeId fresh = 0;
        while (fresh == 0) fresh = (static_cast<uint64_t>(rd()) << 32) ^ rd();
        identity = load_node_identity(o.state_dir, fresh);
    } else {
        auto id = node_id_from_name(*node_name);
        if (!id.ok()) return make_error(id.error().code, "--node-id: " + id.error().message);
        identity = load_node_identity_as(o.state_dir, *id);
    }
    if (!identity.ok()) return identity.error();
    parts->identity = *identity;

    state::DurableSessionStoreOptions so;
    so.path = o.state_dir;
    so.replica_id = parts->identity.replica_id;
    auto local = state::DurableSessionStore::open(so, clock);
    if (!local.ok()) return local.error();
    parts->local = std::move(local).value();

    GrpcTransportOptions to;
    to.listen_address = o.listen_address;
    to.tls = o.tls;
    to.insecure = o.insecure;
    to.max_links = o.max_peer_links;
    auto transport = GrpcTransport::start(to);
    if (!transport.ok())
        return make_error(transport.error().code, "--listen-peer: " + transport.error().message);
    parts->transport = std::move(transport).value();
    parts->advertise = o.advertise_address;
    if (parts->advertise.empty()) {
        // Port 0 binds a free port: peers must be told the real one.
        parts->advertise = o.listen_address.substr(0, o.listen_address.rfind(':') + 1) +
                           std::to_string(parts->transport->port());
    }

    parts->replicator = std::make_unique<Replicator>(
        parts->identity, parts->advertise, o.replication, *parts->local, *parts->transport,
        *parts->discovery, clock, parts->identity.replica_id);
    Replicator* r = parts->replicator.get();
    parts->kv_standby =
        std::make_unique<KvStandbyLink>(parts->identity, *parts->replicator, *parts->transport, o.kv_standby);
    KvStandbyLink* kv = parts->kv_standby.get();
    parts->rate_usage = std::make_unique<RateUsageLink>(parts->identity, *parts->replicator, *parts->transport);
    RateUsageLink* rate = parts->rate_usage.get();
    parts->transport->set_handler([r, kv, rate](std::string_view frame, const FrameOrigin& origin) {
        if (KvStandbyLink::is_kv_frame(frame))
            kv->receive(frame, origin);
        else if (RateUsageLink::is_rate_frame(frame))
            rate->receive(frame, origin);
        else
            r->receive(frame, origin);
    });
    parts->replicator->start();
    parts->driver = std::make_unique<ReplicationDriver>(*parts->replicator);
    parts->store = std::make_unique<ReplicatedSessionStore>(
        *parts->local, *parts->driver, o.write_ack_timeout_ms, o.fetch_timeout_ms);
    parts->started_ms = clock.now_mono_ns() / 1'000'000;
    return std::unique_ptr<FleetNode>(new FleetNode(std::move(parts)));
}

FleetNode::FleetNode(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

FleetNode::~FleetNode() {
    // Nothing may call into the replicator while it goes: the driver's thread
    // first, then the transport's handlers, then the transport itself.
    parts_->store.reset();
    parts_->driver.reset();
    parts_->transport->set_handler(nullptr);
    parts_->transport.reset();
    parts_->kv_standby.reset();
    parts_->rate_usage.reset();
    parts_->replicator.reset();
    parts_->local.reset();
}

RateUsageLink& FleetNode::rate_usage() {
    return *parts_->rate_usage;
}

KvStandbyLink::SendOutcome FleetNode::send_standby_kv(std::string_view session_key, std::string_view head,
                                                      std::string_view body) {
    return parts_->kv_standby->send(session_key, head, body);
}
void FleetNode::set_standby_kv_handler(KvStandbyLink::Handler handler) {
    parts_->kv_standby->set_handler(std::move(handler));
}
void FleetNode::send_standby_gap_notice(NodeId to, std::string_view session_key) {
    parts_->kv_standby->send_gap_notice(to, session_key);
}
void FleetNode::set_standby_gap_handler(KvStandbyLink::GapHandler handler) {
    parts_->kv_standby->set_gap_handler(std::move(handler));
}
KvStandbyLinkStats FleetNode::standby_kv_stats() const {
    return parts_->kv_standby->stats();
}

state::SessionStore& FleetNode::store() {
    return *parts_->store;
}
state::SessionStore& FleetNode::local_store() {
    return *parts_->local;
}
const NodeIdentity& FleetNode::identity() const {
    return parts_->identity;
}
std::string FleetNode::node_name() const {
    return format_node_id(parts_->identity.node_id);
}
const std::string& FleetNode::advertise_address() const {
    return parts_->advertise;
}
int FleetNode::peer_port() const {
    return parts_->transport->port();
}

bool FleetNode::joined() const {
    const int64_t now_ms = parts_->clock->now_mono_ns() / 1'000'000;
    if (now_ms - parts_->started_ms >= parts_->join_wait_ms) return true;
    for (const auto& p : parts_->replicator->peers()) {
        if (p.discovered && p.node_id == 0) return false;
    }
    return true;
}

size_t FleetNode::leave_and_flush(int64_t timeout_ms) {
    parts_->replicator->leave();
    parts_->replicator->flush();
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    // Two quiet looks in a row: a write that just landed is flushed by the
    // driver within a tick and would show up as pending in the second.
    int quiet = 0;
    while (std::chrono::steady_clock::now() < until) {
        if (parts_->replicator->unacknowledged() == 0 && parts_->replicator->unhanded() == 0) {
            if (++quiet >= 2) return 0;
        } else {
            quiet = 0;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return std::max(parts_->replicator->unacknowledged(), parts_->replicator->unhanded());
}

size_t FleetNode::announce_departure(int64_t timeout_ms) {
    parts_->replicator->announce_departure();
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (parts_->replicator->departure_unconfirmed() > 0 &&
           std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return parts_->replicator->departure_unconfirmed();
}

Replicator::SessionCounts FleetNode::session_counts() const {
    return parts_->replicator->session_counts();
}

ReplicationStats FleetNode::stats() const {
    return parts_->replicator->stats();
}
FleetNode::LinkFigures FleetNode::links() const {
    return {parts_->transport->links(), parts_->transport->links_refused(),
            parts_->transport->authenticated()};
}
std::vector<ReplicationLagSample> FleetNode::take_lag_samples() {
    return parts_->replicator->take_lag_samples();
}
std::vector<PeerInfo> FleetNode::peers() const {
    return parts_->replicator->peers();
}
size_t FleetNode::unacknowledged() const {
    return std::max(parts_->replicator->unacknowledged(), parts_->replicator->unhanded());
}

}  // namespace assistd::cluster
