// Two real nodes on loopback, replicating over the gRPC transport: durable
// stores in temp dirs, the real-time driver, the system clock.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#if ASSISTD_HAVE_GRPC
#include <fmt/format.h>
#include <unistd.h>

#include "cluster/driver.h"
#include "cluster/grpc_transport.h"
#include "cluster/replicated_session_store.h"
#include "cluster/replicator.h"
#include "state/durable_session_store.h"
#endif

namespace assistd::cluster {
namespace {

#if ASSISTD_HAVE_GRPC

struct RealNode {
    std::unique_ptr<GrpcTransport> transport;
    std::unique_ptr<state::DurableSessionStore> store;
    std::unique_ptr<StaticDiscovery> discovery;
    std::unique_ptr<Replicator> replicator;
    std::unique_ptr<ReplicationDriver> driver;
    std::string address;
};

class GrpcLoopbackTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / fmt::format("assistd-grpc-{}", ::getpid());
        std::filesystem::remove_all(dir_);
    }
    void start_fleet(int count, ReplicationOptions o = {}) {
        nodes_.resize(count);
        std::vector<std::string> addresses;
        for (auto& n : nodes_) {
            auto t = GrpcTransport::start(GrpcTransportOptions{"127.0.0.1:0", 4096});
            ASSERT_TRUE(t.ok()) << t.error().message;
            n.transport = std::move(t).value();
            n.address = fmt::format("127.0.0.1:{}", n.transport->port());
            addresses.push_back(n.address);
        }
        o.heartbeat_interval_ms = 50;
        o.suspect_after_ms = 500;
        o.anti_entropy_interval_ms = 300;
        for (int i = 0; i < count; ++i) {
            auto& n = nodes_[i];
            const NodeIdentity id{static_cast<NodeId>(1000 + i), 1, replica_id_for(1000 + i, 1)};
            state::DurableSessionStoreOptions so;
            so.path = (dir_ / fmt::format("node{}", i)).string();
            so.replica_id = id.replica_id;
            auto store = state::DurableSessionStore::open(so, SystemClock::instance());
            ASSERT_TRUE(store.ok()) << store.error().message;
            n.store = std::move(store).value();
            n.discovery = std::make_unique<StaticDiscovery>(addresses);
            n.replicator =
                std::make_unique<Replicator>(id, n.address, o, *n.store, *n.transport, *n.discovery,
                                             SystemClock::instance(), 11 + i);
            Replicator* r = n.replicator.get();
            n.transport->set_handler([r](std::string_view frame) { r->receive(frame); });
            n.replicator->start();
            n.driver = std::make_unique<ReplicationDriver>(*n.replicator, 10);
        }
        ASSERT_TRUE(eventually([&] {
            for (auto& n : nodes_) {
                if (n.replicator->members().size() != nodes_.size()) return false;
            }
            return true;
        })) << "the nodes never heard each other";
    }
    void TearDown() override {
        for (auto& n : nodes_) {
            n.driver.reset();
            if (n.transport) n.transport->set_handler(nullptr);
        }
        for (auto& n : nodes_) {
            n.transport.reset();
            n.replicator.reset();
            n.store.reset();
        }
        std::filesystem::remove_all(dir_);
    }
    // Polls (bounded) until `done` holds.
    template <typename Fn>
    bool eventually(Fn done, int timeout_ms = 10000) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (std::chrono::steady_clock::now() < until) {
            if (done()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return done();
    }

    std::filesystem::path dir_;
    std::vector<RealNode> nodes_;
};

TEST_F(GrpcLoopbackTest, WritesOnOneNodeAreAcknowledgedByAndReadableOnTheOther) {
    ASSERT_NO_FATAL_FAILURE(start_fleet(2));
    auto& a = nodes_[0];
    auto& b = nodes_[1];
    std::vector<double> ms;  // append + wait for the replica's ack, as a request would
    for (int i = 0; i < 20; ++i) {
        const std::string id = fmt::format("chat-{}", i);
        ASSERT_TRUE(a.store->create(id, "tenant", "t").ok());
        const auto t0 = std::chrono::steady_clock::now();
        ASSERT_TRUE(a.store->append_message(id, {"user", fmt::format("question {}", i)}).ok());
        auto st = a.driver->await_replication(id, a.store->version(id).value(), 5000);
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
        ASSERT_TRUE(st.ok()) << st.error().message;
        // Acknowledged means durable on B already: readable there right now.
        auto there = b.store->get(id);
        ASSERT_TRUE(there.ok()) << id;
        EXPECT_EQ(there->messages.at(0).content, fmt::format("question {}", i));
    }
    std::sort(ms.begin(), ms.end());
    std::printf(
        "append acknowledged by a replica over gRPC loopback (group commit on both): p50 %.2f ms, "
        "max %.2f ms "
        "over %zu writes\n",
        ms[ms.size() / 2], ms.back(), ms.size());
}

TEST_F(GrpcLoopbackTest, ConcurrentAppendsThroughBothNodesConverge) {
    ASSERT_NO_FATAL_FAILURE(start_fleet(2));
    auto& a = nodes_[0];
    auto& b = nodes_[1];
    ASSERT_TRUE(a.store->create("shared", "tenant", "t").ok());
    ASSERT_TRUE(
        a.driver->await_replication("shared", a.store->version("shared").value(), 5000).ok());
    std::thread writer_b([&] {
        for (int i = 0; i < 50; ++i)
            (void)b.store->append_message("shared", {"user", fmt::format("b{}", i)});
    });
    for (int i = 0; i < 50; ++i)
        (void)a.store->append_message("shared", {"user", fmt::format("a{}", i)});
    writer_b.join();
    ASSERT_TRUE(eventually([&] {
        auto x = a.store->get("shared");
        auto y = b.store->get("shared");
        return x.ok() && y.ok() && x->messages.size() == 100 && y->messages.size() == 100 &&
               a.store->version("shared").value() == b.store->version("shared").value();
    })) << "the two nodes did not converge";
    auto x = a.store->get("shared").value();
    auto y = b.store->get("shared").value();
    for (size_t i = 0; i < x.messages.size(); ++i) EXPECT_EQ(x.messages[i].id, y.messages[i].id);
}

TEST_F(GrpcLoopbackTest, AnyNodeServesAnySessionThroughTheReplicatedStore) {
    ReplicationOptions o;
    o.replication_factor = 2;
    ASSERT_NO_FATAL_FAILURE(start_fleet(3, o));
    // A session whose replicas are nodes 0 and 1: node 2 holds nothing of it.
    std::string id;
    for (int i = 0; id.empty(); ++i) {
        const std::string c = fmt::format("chat-{}", i);
        auto r = nodes_[0].replicator->replicas(c);
        std::sort(r.begin(), r.end());
        if (r == std::vector<NodeId>{1000, 1001}) id = c;
    }
    ReplicatedSessionStore a(*nodes_[0].store, *nodes_[0].driver);
    ReplicatedSessionStore c(*nodes_[2].store, *nodes_[2].driver);
    ASSERT_TRUE(a.create(id, "tenant", "t").ok());
    ASSERT_TRUE(a.append_message(id, {"user", "hello"}).ok());
    ASSERT_FALSE(nodes_[2].store->get(id).ok());

    auto fetched = c.get(id);  // fetch-on-miss
    ASSERT_TRUE(fetched.ok()) << fetched.error().message;
    ASSERT_EQ(fetched->messages.size(), 1u);
    EXPECT_EQ(fetched->messages[0].content, "hello");
    EXPECT_GE(nodes_[2].replicator->stats().fetches, 1u);

    // A turn through node 2 is acknowledged by a replica: readable on both at once.
    auto m = c.append_message(id, {"assistant", "hi there"});
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_TRUE(eventually([&] {
        auto x = nodes_[0].store->get(id);
        auto y = nodes_[1].store->get(id);
        return x.ok() && y.ok() && x->messages.size() == 2 && y->messages.size() == 2;
    }));

    // Absent everywhere: the usual not-found, after asking.
    auto missing = c.get("never-was");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);

    // A deletion through any node reaches every replica.
    ASSERT_TRUE(c.remove(id).ok());
    EXPECT_TRUE(nodes_[0].store->deleted(id) || nodes_[1].store->deleted(id))
        << "acknowledged by a replica";
    EXPECT_TRUE(
        eventually([&] { return nodes_[0].store->deleted(id) && nodes_[1].store->deleted(id); }));
}

TEST(GrpcTransportErrors, BadListenAddressesAreClearErrors) {
    auto r = GrpcTransport::start(GrpcTransportOptions{"no-port", 16});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("host:port"), std::string::npos);
    r = GrpcTransport::start(
        GrpcTransportOptions{"203.0.113.1:7001", 16});  // not an address of this machine
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kIo);
    EXPECT_NE(r.error().message.find("203.0.113.1:7001"), std::string::npos);
}

TEST(GrpcTransportErrors, SendingToNobodyNeitherBlocksNorGrowsWithoutBound) {
    auto t = GrpcTransport::start(GrpcTransportOptions{"127.0.0.1:0", 8});
    ASSERT_TRUE(t.ok());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i)
        (*t)->send("127.0.0.1:1", std::string(100, 'x'));  // nothing listens on port 1
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    EXPECT_GE((*t)->frames_dropped(), 900u) << "the queue is bounded";
}

#else

TEST(GrpcLoopback, Skipped) {
    GTEST_SKIP() << "built without gRPC (run scripts/install-deps.sh and reconfigure)";
}

#endif

}  // namespace
}  // namespace assistd::cluster
