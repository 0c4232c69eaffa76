#include <rocksdb/env.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <sstream>
#include <vector>

#include "cluster/membership.h"
#include "cluster/node_identity.h"
#include "cluster/placement.h"
#include "cluster/replicator.h"
#include "common/clock.h"
#include "common/random.h"
#include "fleet_sim.h"
#include "state/durable_session_store.h"
#include "state/tenant_sessions.h"

namespace assistd::cluster::sim {
namespace {

using state::DurableSessionStore;
using state::DurableSessionStoreOptions;

constexpr uint16_t kPort = 7000;
constexpr int64_t kTickMs = 5;
constexpr int64_t kAckTimeoutMs = 500;

// "a" + to_string(n) trips a false -Wrestrict in GCC 12 at -O3; append instead.
std::string cat(std::string_view a, uint64_t n) {
    std::string s(a);
    s += std::to_string(n);
    return s;
}

struct Rng {
    uint64_t state;
    uint64_t next() { return splitmix64(state); }
    uint64_t below(uint64_t n) { return n == 0 ? 0 : next() % n; }
    double unit() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
    bool chance(double p) { return unit() < p; }
};

struct Frame {
    int64_t at;
    uint64_t seq;
    std::string from;  // address
    std::string to;
    std::string bytes;
    bool operator>(const Frame& o) const { return at != o.at ? at > o.at : seq > o.seq; }
};

class Fleet;

class SimTransport final : public Transport {
  public:
    SimTransport(Fleet& fleet, std::string from) : fleet_(fleet), from_(std::move(from)) {}
    void send(const std::string& address, std::string frame) override;

  private:
    Fleet& fleet_;
    std::string from_;
};

// The fleet's DNS: "fleet" resolves to the IPs of the current members.
class SimResolver final : public Resolver {
  public:
    explicit SimResolver(const std::vector<std::string>& ips) : ips_(ips) {}
    Result<std::vector<std::string>> resolve(const std::string& host) override {
        if (host != "fleet") return make_error(ErrorCode::kNotFound, "no such host '" + host + "'");
        return ips_;
    }

  private:
    const std::vector<std::string>& ips_;
};

struct SimNode {
    int index = 0;
    std::string ip, address, db_path;
    NodeIdentity identity;
    std::unique_ptr<DurableSessionStore> store;
    std::unique_ptr<DnsDiscovery> discovery;
    std::unique_ptr<SimTransport> transport;
    std::unique_ptr<Replicator> replicator;
    bool up = false;
    bool leaving = false;
    bool announced = false;  // told the others it left (the end of its drain)
    int64_t restart_at = -1;
};

struct AckedMessage {
    std::string session, id, content, predecessor;
};

class Fleet {
  public:
    explicit Fleet(const FleetSimConfig& c)
        : c_(c),
          rng_{c.seed * 0x9e3779b97f4a7c15ull + 7},
          resolver_(dns_),
          env_(rocksdb::NewMemEnv(rocksdb::Env::Default())) {}

    ~Fleet() {
        for (auto& n : nodes_) stop(*n);
    }

    FleetSimResult run();
    FleetSimResult run_tenants_across_partition();
    void post(const std::string& from, const std::string& to, std::string bytes);

  private:
    int64_t now() const { return clock_.now_mono_ns() / 1'000'000; }
    Status start(SimNode& n);
    void stop(SimNode& n);
    SimNode& add_node();
    void deliver_due();
    void tick_all();
    // Simulated time passing with frames delivered and nodes ticked; the partition ends when due.
    void advance(int64_t ms);
    // Advances until converged (checked every 50 ms) or the quiesce limit; false with why otherwise.
    bool await_convergence(std::string& why);
    void client_operation();
    void fault_step();
    std::vector<SimNode*> serving_nodes();
    std::vector<NodeId> member_ids() const;
    bool converged(std::string& why);
    void dump();
    bool check_invariants(std::string& why);
    template <typename... Args>
    void trace(const char* fmt, Args... args) {
        if (!trace_) return;
        std::printf("[%6lld] ", static_cast<long long>(now()));
        std::printf(fmt, args...);
        std::printf("\n");
    }
    std::string where() const { return " (at simulated ms " + std::to_string(now()) + ")"; }

    FleetSimConfig c_;
    Rng rng_;
    mutable ManualClock clock_;
    std::vector<std::string> dns_;
    SimResolver resolver_;
    std::unique_ptr<rocksdb::Env> env_;
    std::vector<std::unique_ptr<SimNode>> nodes_;
    std::priority_queue<Frame, std::vector<Frame>, std::greater<Frame>> frames_;
    uint64_t seq_ = 0;
    uint64_t frame_count_ = 0;
    bool lossy_ = true;
    std::string isolated_;  // address cut off from everyone
    int64_t isolated_until_ = -1;
    bool joined_ = false, left_ = false, disk_lost_ = false;
    int64_t disk_loss_at_ = -1;
    std::string last_acked_address_;

    // The workload's record.
    std::vector<std::string> created_;  // sessions created (acknowledged or not)
    std::set<std::string> acked_created_, acked_deleted_;
    std::vector<AckedMessage> acked_;
    int next_op_ = 0;
    std::string failure_;
    bool trace_ = std::getenv("ASSISTD_SIM_TRACE") != nullptr;
};

void SimTransport::send(const std::string& address, std::string frame) {
    fleet_.post(from_, address, std::move(frame));
}

void Fleet::post(const std::string& from, const std::string& to, std::string bytes) {
    ++frame_count_;
    if (lossy_ && rng_.chance(c_.drop)) return;
    const int copies = lossy_ && rng_.chance(c_.duplicate) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
        const int64_t delay =
            1 + static_cast<int64_t>(rng_.below(static_cast<uint64_t>(c_.max_delay_ms)));
        frames_.push(
            Frame{now() + delay, seq_++, from, to, i + 1 == copies ? std::move(bytes) : bytes});
    }
}

SimNode& Fleet::add_node() {
    auto n = std::make_unique<SimNode>();
    n->index = static_cast<int>(nodes_.size());
    n->ip = cat("10.0.0.", static_cast<uint64_t>(n->index + 1));
    n->address = n->ip + cat(":", kPort);
    n->db_path = cat("/sim/node-", static_cast<uint64_t>(n->index));
    uint64_t id = rng_.next();
    n->identity.node_id = id ? id : 1;
    n->identity.incarnation = 1;
    n->identity.replica_id = replica_id_for(n->identity.node_id, 1);
    dns_.push_back(n->ip);
    nodes_.push_back(std::move(n));
    return *nodes_.back();
}

Status Fleet::start(SimNode& n) {
    DurableSessionStoreOptions o;
    o.path = n.db_path;
    o.replica_id = n.identity.replica_id;
    o.durability = DurableSessionStoreOptions::Durability::kSyncEachWrite;
    o.snapshot_every = 16;  // exercise snapshots and log replay on restart
    o.env = env_.get();
    auto store = DurableSessionStore::open(o, clock_);
    if (!store.ok()) return store.error();
    n.store = std::move(store).value();
    n.discovery = std::make_unique<DnsDiscovery>("fleet", kPort, resolver_);
    n.transport = std::make_unique<SimTransport>(*this, n.address);
    ReplicationOptions r;
    r.replication_factor = c_.replication_factor;
    r.sync_acks = c_.sync_acks;
    r.heartbeat_interval_ms = 50;
    r.suspect_after_ms = 300;
    r.anti_entropy_interval_ms = 250;
    r.discovery_interval_ms = 200;
    r.ack_timeout_ms = 200;
    r.max_batch_bytes = 2048;  // small: many batches, so back-pressure is exercised
    r.max_inflight_batches = 2;
    r.max_inflight_bytes = 8192;
    r.max_offers_per_digest = 8;
    n.replicator = std::make_unique<Replicator>(n.identity, n.address, r, *n.store, *n.transport,
                                                *n.discovery, clock_, rng_.next());
    n.replicator->start();
    if (n.leaving) n.replicator->leave();
    n.up = true;
    return {};
}

void Fleet::stop(SimNode& n) {
    n.replicator.reset();  // pending waits die with it: never acknowledged
    n.store.reset();
    n.discovery.reset();
    n.transport.reset();
    n.up = false;
}

void Fleet::deliver_due() {
    while (!frames_.empty() && frames_.top().at <= now()) {
        Frame f = frames_.top();
        frames_.pop();
        if (!isolated_.empty() && (f.from == isolated_ || f.to == isolated_)) continue;
        for (auto& n : nodes_) {
            if (n->address == f.to && n->up) n->replicator->receive(f.bytes);
        }
    }
}

void Fleet::tick_all() {
    for (auto& n : nodes_) {
        if (!n->up) continue;
        n->replicator->tick();
        // A leaving node whose changes are acknowledged and whose sessions are
        // handed over announces its departure, as a drained server does
        // before it exits (it stays up here: the others must ignore it).
        if (n->leaving && !n->announced && n->replicator->unacknowledged() == 0 &&
            n->replicator->unhanded() == 0) {
            n->announced = true;
            n->replicator->announce_departure();
            trace("%s announces its departure", n->address.c_str());
        }
    }
}

std::vector<SimNode*> Fleet::serving_nodes() {
    std::vector<SimNode*> out;
    for (auto& n : nodes_) {
        if (n->up && !n->leaving) out.push_back(n.get());
    }
    return out;
}

std::vector<NodeId> Fleet::member_ids() const {
    std::vector<NodeId> out;
    for (const auto& n : nodes_) {
        if (!n->leaving) out.push_back(n->identity.node_id);
    }
    std::sort(out.begin(), out.end());
    return out;
}

void Fleet::client_operation() {
    auto serving = serving_nodes();
    if (serving.empty()) return;
    SimNode& n = *serving[rng_.below(serving.size())];
    const int op = next_op_++;
    const double r = rng_.unit();
    if (created_.empty() || (static_cast<int>(created_.size()) < c_.sessions && r < 0.1)) {
        const std::string id = cat("s", created_.size());
        if (!n.store->create(id, "tenant", "title " + id).ok()) return;
        created_.push_back(id);
        trace("create %s at %s", id.c_str(), n.address.c_str());
        auto v = n.store->version(id);
        n.replicator->flush();
        n.replicator->await_replication(id, *v, kAckTimeoutMs,
                                        [this, id, addr = n.address](Status st) {
                                            if (st.ok()) {
                                                acked_created_.insert(id);
                                                last_acked_address_ = addr;
                                            }
                                        });
        return;
    }
    const std::string id = created_[rng_.below(created_.size())];
    if (n.store->deleted(id)) return;
    auto session = n.store->get(id);
    if (!session.ok()) {
        n.replicator->read(id, 300, [](Status) {});  // brings it here; the client retries elsewhere
        return;
    }
    if (r < 0.12 && acked_deleted_.size() < 2) {
        if (!n.store->remove(id).ok()) return;
        trace("delete %s at %s", id.c_str(), n.address.c_str());
        n.replicator->flush();
        n.replicator->await_replication(id, {}, kAckTimeoutMs, [this, id](Status st) {
            if (st.ok()) acked_deleted_.insert(id);
        });
        return;
    }
    const std::string predecessor = session->messages.empty() ? "" : session->messages.back().id;
    std::string content = "m";
    content += std::to_string(op);
    content += '@';
    content += n.address;
    auto m = n.store->append_message(id, state::MessageInput{"user", content});
    if (!m.ok()) return;
    auto v = n.store->version(id);
    n.replicator->flush();
    AckedMessage rec{id, m->id, content, predecessor};
    trace("append %s to %s at %s (after %s) vv=%s", m->id.c_str(), id.c_str(), n.address.c_str(),
          predecessor.c_str(), v->to_string().c_str());
    n.replicator->await_replication(
        id, *v, kAckTimeoutMs, [this, rec, addr = n.address](Status st) {
            trace("ack %s: %s", rec.id.c_str(), st.ok() ? "ok" : st.error().message.c_str());
            if (!st.ok()) return;
            acked_.push_back(rec);
            last_acked_address_ = addr;
        });
}

void Fleet::fault_step() {
    const int64_t t = now();
    // Restarts that are due.
    for (auto& n : nodes_) {
        if (!n->up && n->restart_at >= 0 && t >= n->restart_at) {
            n->restart_at = -1;
            trace("restart %s", n->address.c_str());
            ++n->identity.incarnation;
            n->identity.replica_id = replica_id_for(n->identity.node_id, n->identity.incarnation);
            auto st = start(*n);
            if (!st.ok())
                failure_ = "restart of " + n->address + " failed: " + st.error().message + where();
        }
    }
    if (!isolated_.empty() && t >= isolated_until_) isolated_.clear();
    if (!lossy_) return;  // healing: no new faults
    if (c_.disk_loss && !disk_lost_ && disk_loss_at_ >= 0 && t >= disk_loss_at_ &&
        !last_acked_address_.empty()) {
        // The weakest moment: the node that just had a write acknowledged loses
        // its disk. Every acknowledged write must still be on another node.
        for (auto& n : nodes_) {
            if (n->address != last_acked_address_ || !n->up) continue;
            trace("disk loss: %s", n->address.c_str());
            stop(*n);
            n->db_path += "-replaced";
            uint64_t id = rng_.next();
            n->identity.node_id = id ? id : 1;
            n->identity.incarnation = 0;  // counted up by the restart
            n->restart_at = t + 50 + static_cast<int64_t>(rng_.below(300));
            disk_lost_ = true;
        }
    }
    if (rng_.chance(1.0 / 400)) {  // crash + restart, ~7 per 3 s
        auto serving = serving_nodes();
        if (c_.crashes && serving.size() > 1) {
            SimNode& n = *serving[rng_.below(serving.size())];
            trace("crash %s", n.address.c_str());
            stop(n);
            n.restart_at = t + 50 + static_cast<int64_t>(rng_.below(700));
        }
    }
    if (c_.partitions && isolated_.empty() && rng_.chance(1.0 / 800)) {
        isolated_ = nodes_[rng_.below(nodes_.size())]->address;
        isolated_until_ = t + 200 + static_cast<int64_t>(rng_.below(1300));
        trace("partition: %s cut off until %lld", isolated_.c_str(),
              static_cast<long long>(isolated_until_));
    }
    if (c_.membership_changes && !joined_ && t > c_.workload_ms / 3 && rng_.chance(1.0 / 500)) {
        joined_ = true;
        auto st = start(add_node());
        trace("join %s", nodes_.back()->address.c_str());
        if (!st.ok()) failure_ = "join failed: " + st.error().message + where();
    }
    if (c_.membership_changes && !left_ && t > c_.workload_ms / 2 && rng_.chance(1.0 / 500)) {
        auto serving = serving_nodes();
        if (serving.size() > 2) {
            left_ = true;
            SimNode& n = *serving[rng_.below(serving.size())];
            n.leaving = true;
            dns_.erase(std::remove(dns_.begin(), dns_.end(), n.ip), dns_.end());
            n.replicator->leave();
            trace("leave %s", n.address.c_str());
        }
    }
}

void Fleet::dump() {
    for (auto& n : nodes_) {
        const auto st = n->replicator->stats();
        trace(
            "node %s id %s%s: sent %llu acked %llu resent %llu applied %llu digests %llu pushed "
            "%llu pulled %llu "
            "handoffs %llu unacked %zu",
            n->address.c_str(), format_node_id(n->identity.node_id).c_str(),
            n->leaving ? " (left)" : "", (unsigned long long)st.batches_sent,
            (unsigned long long)st.batches_acked, (unsigned long long)st.batches_resent,
            (unsigned long long)st.deltas_applied, (unsigned long long)st.digests_sent,
            (unsigned long long)st.repairs_pushed, (unsigned long long)st.repairs_pulled,
            (unsigned long long)st.handoffs_confirmed, n->replicator->unacknowledged());
        for (const auto& p : n->replicator->peers()) {
            trace("   peer %s id %s %s%s", p.address.c_str(), format_node_id(p.node_id).c_str(),
                  peer_health_name(p.health), p.discovered ? "" : " (not discovered)");
        }
        for (const auto& v : n->store->list_versions()) {
            trace("   holds %s %s", v.id.c_str(),
                  v.deleted ? "deleted" : v.version.to_string().c_str());
        }
    }
}

bool Fleet::converged(std::string& why) {
    const auto members = member_ids();
    for (auto& n : nodes_) {
        if (!n->up) {
            why = n->address + " is down";
            return false;
        }
        if (!n->leaving && n->replicator->members() != members) {
            why = n->address + " does not see every member yet";
            return false;
        }
    }
    std::set<std::string> ids, tombstoned;
    for (auto& n : nodes_) {
        for (const auto& v : n->store->list_versions()) {
            ids.insert(v.id);
            if (v.deleted) tombstoned.insert(v.id);
        }
    }
    std::map<NodeId, SimNode*> by_id;
    for (auto& n : nodes_) by_id[n->identity.node_id] = n.get();
    // Whatever any node holds -- a node that left, a writer outside the
    // replica set -- must have reached every replica.
    for (auto& n : nodes_) {
        for (const auto& v : n->store->list_versions()) {
            if (v.deleted) continue;
            for (NodeId r : place_replicas(v.id, members, c_.replication_factor)) {
                SimNode& holder = *by_id.at(r);
                auto there = holder.store->version(v.id);
                if (!holder.store->deleted(v.id) && !(there.ok() && there->dominates(v.version))) {
                    why = n->address + " holds changes of " + v.id + " that replica " +
                          holder.address + " lacks";
                    return false;
                }
            }
        }
    }
    for (const auto& id : ids) {
        const auto reps = place_replicas(id, members, c_.replication_factor);
        std::optional<state::Session> first;
        std::string first_at;
        for (NodeId r : reps) {
            SimNode& n = *by_id.at(r);
            if (tombstoned.count(id)) {
                if (!n.store->deleted(id)) {
                    why = "session " + id + " is deleted elsewhere but not on replica " + n.address;
                    return false;
                }
                continue;
            }
            auto s = n.store->get(id);
            if (!s.ok()) {
                why = "replica " + n.address + " lacks session " + id;
                return false;
            }
            if (!first) {
                first = std::move(s).value();
                first_at = n.address;
                continue;
            }
            const auto& a = *first;
            const auto& b = *s;
            bool same = a.tenant == b.tenant && a.title == b.title &&
                        a.created_at_ms == b.created_at_ms && a.metadata == b.metadata &&
                        a.summary == b.summary && a.messages.size() == b.messages.size();
            for (size_t i = 0; same && i < a.messages.size(); ++i) {
                same = a.messages[i].id == b.messages[i].id &&
                       a.messages[i].content == b.messages[i].content &&
                       a.messages[i].role == b.messages[i].role;
            }
            if (!same || n.store->version(id).value() !=
                             by_id.at(reps.front())->store->version(id).value()) {
                why = "session " + id + " differs between " + first_at + " (" +
                      std::to_string(a.messages.size()) + " messages) and " + n.address + " (" +
                      std::to_string(b.messages.size()) + " messages)";
                return false;
            }
        }
    }
    return true;
}

bool Fleet::check_invariants(std::string& why) {
    const auto members = member_ids();
    std::map<NodeId, SimNode*> by_id;
    for (auto& n : nodes_) by_id[n->identity.node_id] = n.get();
    auto replica_of = [&](const std::string& id) {
        return by_id.at(place_replicas(id, members, c_.replication_factor).front());
    };
    for (const auto& id : acked_deleted_) {
        if (!replica_of(id)->store->deleted(id)) {
            why = "acknowledged deletion of " + id + " was lost";
            return false;
        }
    }
    for (const auto& id : acked_created_) {
        SimNode& n = *replica_of(id);
        if (!n.store->deleted(id) && !n.store->get(id).ok()) {
            why = "acknowledged session " + id + " was lost";
            return false;
        }
    }
    std::map<std::string, std::map<std::string, size_t>>
        positions;  // session -> message id -> index
    for (const auto& m : acked_) {
        SimNode& n = *replica_of(m.session);
        if (n.store->deleted(m.session)) continue;  // deleted afterwards: gone on purpose
        auto& pos = positions[m.session];
        if (pos.empty()) {
            auto s = n.store->get(m.session);
            if (!s.ok()) {
                why = "session " + m.session +
                      " of an acknowledged message is missing: " + s.error().message;
                return false;
            }
            for (size_t i = 0; i < s->messages.size(); ++i) {
                if (!pos.emplace(s->messages[i].id, i).second) {
                    why = "message " + s->messages[i].id + " appears twice in " + m.session;
                    return false;
                }
            }
        }
        auto at = pos.find(m.id);
        if (at == pos.end()) {
            why = "acknowledged message " + m.id + " (" + m.content + ") of session " + m.session +
                  " was lost";
            return false;
        }
        if (!m.predecessor.empty()) {
            auto p = pos.find(m.predecessor);
            if (p == pos.end() || p->second >= at->second) {
                why = "message " + m.id + " of " + m.session + " no longer follows " +
                      m.predecessor + ", the message its writer saw last";
                return false;
            }
        }
    }
    return true;
}

FleetSimResult Fleet::run() {
    FleetSimResult result;
    for (int i = 0; i < c_.nodes; ++i) add_node();
    for (auto& n : nodes_) {
        if (auto st = start(*n); !st.ok()) {
            result.failure = "start failed: " + st.error().message;
            return result;
        }
    }
    if (c_.disk_loss)
        disk_loss_at_ = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(c_.workload_ms)));
    const double op_chance =
        static_cast<double>(c_.operations) / static_cast<double>(c_.workload_ms);
    // The workload, with faults.
    while (now() < c_.workload_ms && failure_.empty()) {
        clock_.advance_ms(1);
        deliver_due();
        if (now() % kTickMs == 0) tick_all();
        fault_step();
        if (rng_.chance(op_chance)) client_operation();
    }
    // Healing: no more loss or partitions, every node back up; then quiescence.
    lossy_ = false;
    isolated_.clear();
    for (auto& n : nodes_) {
        if (!n->up) n->restart_at = now();
    }
    fault_step();
    const int64_t healed_at = now();
    std::string why = "not checked";
    bool done = false;
    while (failure_.empty() && now() - healed_at < c_.quiesce_limit_ms) {
        clock_.advance_ms(1);
        deliver_due();
        if (now() % kTickMs == 0) tick_all();
        fault_step();
        if (now() % 50 == 0 && converged(why)) {
            done = true;
            break;
        }
    }
    result.acknowledged = static_cast<int>(acked_.size());
    result.sessions_checked = static_cast<int>(created_.size());
    result.frames = frame_count_;
    result.converged_after_ms = now() - healed_at;
    for (auto& n : nodes_) {
        if (!n->up) continue;
        const auto st = n->replicator->stats();
        result.repairs += st.repairs_pushed + st.repairs_pulled;
        result.handoffs += st.handoffs_confirmed;
        result.resent += st.batches_resent;
        result.fetches += st.fetches;
        result.departures += st.departures;
    }
    if (!failure_.empty()) {
        result.failure = failure_;
    } else if (!done) {
        result.failure = "no convergence within " + std::to_string(c_.quiesce_limit_ms) +
                         " ms of healing: " + why;
        if (trace_) dump();
    } else if (!check_invariants(why)) {
        result.failure = why;
        if (trace_) dump();
    } else {
        result.ok = true;
    }
    return result;
}

void Fleet::advance(int64_t ms) {
    for (int64_t i = 0; i < ms; ++i) {
        clock_.advance_ms(1);
        deliver_due();
        if (now() % kTickMs == 0) tick_all();
        if (!isolated_.empty() && now() >= isolated_until_) isolated_.clear();
    }
}

bool Fleet::await_convergence(std::string& why) {
    const int64_t from = now();
    while (now() - from < c_.quiesce_limit_ms) {
        advance(50);
        if (converged(why)) return true;
    }
    return false;
}

FleetSimResult Fleet::run_tenants_across_partition() {
    FleetSimResult result;
    if (c_.nodes < 2) {
        result.failure = "the scenario needs two sides: at least 2 nodes";
        return result;
    }
    for (int i = 0; i < c_.nodes; ++i) add_node();
    for (auto& n : nodes_) {
        if (auto st = start(*n); !st.ok()) {
            result.failure = "start failed: " + st.error().message;
            return result;
        }
    }
    advance(1000);  // the fleet finds itself
    SimNode& cut_off = *nodes_[0];
    SimNode& majority = *nodes_[1];
    isolated_ = cut_off.address;
    isolated_until_ = INT64_MAX;
    advance(500);  // each side suspects the other
    trace("partition: %s cut off", cut_off.address.c_str());

    const std::string id = "shared";
    struct Side {
        SimNode& node;
        std::string tenant;
        std::vector<std::string> written;
    };
    std::vector<Side> sides = {{cut_off, "acme", {}}, {majority, "globex", {}}};
    for (auto& side : sides) {
        const std::string key = state::tenant_session_key(side.tenant, id);
        if (auto st = side.node.store->create(key, side.tenant, side.tenant + "'s"); !st.ok()) {
            result.failure = side.tenant + " could not create " + id + ": " + st.error().message;
            return result;
        }
        side.node.replicator->flush();
    }
    for (int turn = 0; turn < 3; ++turn) {
        for (auto& side : sides) {
            const std::string content = side.tenant + " turn " + std::to_string(turn);
            auto m = side.node.store->append_message(state::tenant_session_key(side.tenant, id), {"user", content});
            if (!m.ok()) {
                result.failure = "append for " + side.tenant + ": " + m.error().message;
                return result;
            }
            side.written.push_back(content);
            side.node.replicator->flush();
        }
        advance(20 + static_cast<int64_t>(rng_.below(60)));
    }
    // Healing.
    lossy_ = false;
    isolated_.clear();
    trace("partition healed");
    const int64_t healed_at = now();
    std::string why;
    if (!await_convergence(why)) {
        result.failure = "no convergence within " + std::to_string(c_.quiesce_limit_ms) + " ms of healing: " + why;
        if (trace_) dump();
        return result;
    }
    result.converged_after_ms = now() - healed_at;
    result.frames = frame_count_;
    const auto members = member_ids();
    for (auto& n : nodes_) {
        for (const auto& side : sides) {
            const std::string key = state::tenant_session_key(side.tenant, id);
            const auto replicas = place_replicas(key, members, c_.replication_factor);
            const bool replica = std::find(replicas.begin(), replicas.end(), n->identity.node_id) != replicas.end();
            auto found = state::find_tenant_session(*n->store, side.tenant, id);
            if (!found.ok()) {
                if (!replica) continue;  // a node outside the replica set need not hold it
                result.failure = "replica " + n->address + " has no session " + id + " of " + side.tenant + ": " +
                                 found.error().message;
                return result;
            }
            std::vector<std::string> contents;
            for (const auto& m : found->session.messages) contents.push_back(m.content);
            if (contents != side.written || found->session.tenant != side.tenant || found->key != key) {
                std::string got;
                for (const auto& c : contents) got += " [" + c + "]";
                result.failure = n->address + ": " + side.tenant + "'s session " + id + " (key " + found->key +
                                 ", tenant " + found->session.tenant + ") holds" + got;
                return result;
            }
            const auto listed = state::list_tenant_sessions(*n->store, side.tenant);
            if (listed.size() != 1 || listed[0].session.id != id) {
                result.failure = n->address + " lists " + std::to_string(listed.size()) + " sessions of " +
                                 side.tenant + ", not just " + id;
                return result;
            }
        }
    }
    result.sessions_checked = static_cast<int>(sides.size());
    result.ok = true;
    return result;
}

}  // namespace

FleetSimResult run_fleet_simulation(const FleetSimConfig& config) {
    Fleet fleet(config);
    return fleet.run();
}

FleetSimResult run_tenants_across_partition_simulation(const FleetSimConfig& config) {
    Fleet fleet(config);
    return fleet.run_tenants_across_partition();
}

std::string replay_hint(uint64_t seed, const char* test_name) {
    std::ostringstream s;
    s << "replay with: ASSISTD_SIM_SEED=" << seed
      << " build/tests/cluster_<test binary> --gtest_filter='*" << test_name << "*'";
    return s.str();
}

}  // namespace assistd::cluster::sim
