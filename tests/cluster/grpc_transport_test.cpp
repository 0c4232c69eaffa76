// Two real nodes on loopback, replicating over the gRPC transport: durable
// stores in temp dirs, the real-time driver, the system clock.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#if ASSISTD_HAVE_GRPC
#include <fmt/format.h>
#include <unistd.h>

#include "cluster/driver.h"
#include "cluster/grpc_transport.h"
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
        for (int i = 0; i < 2; ++i) {
            auto t = GrpcTransport::start(GrpcTransportOptions{"127.0.0.1:0", 4096});
            ASSERT_TRUE(t.ok()) << t.error().message;
            nodes_[i].transport = std::move(t).value();
            nodes_[i].address = fmt::format("127.0.0.1:{}", nodes_[i].transport->port());
        }
        ReplicationOptions o;
        o.heartbeat_interval_ms = 50;
        o.suspect_after_ms = 500;
        o.anti_entropy_interval_ms = 300;
        for (int i = 0; i < 2; ++i) {
            auto& n = nodes_[i];
            const NodeIdentity id{static_cast<NodeId>(1000 + i), 1, replica_id_for(1000 + i, 1)};
            state::DurableSessionStoreOptions so;
            so.path = (dir_ / fmt::format("node{}", i)).string();
            so.replica_id = id.replica_id;
            auto store = state::DurableSessionStore::open(so, SystemClock::instance());
            ASSERT_TRUE(store.ok()) << store.error().message;
            n.store = std::move(store).value();
            n.discovery = std::make_unique<StaticDiscovery>(std::vector<std::string>{nodes_[0].address, nodes_[1].address});
            n.replicator = std::make_unique<Replicator>(id, n.address, o, *n.store, *n.transport, *n.discovery,
                                                        SystemClock::instance(), 11 + i);
            Replicator* r = n.replicator.get();
            n.transport->set_handler([r](std::string_view frame) { r->receive(frame); });
            n.replicator->start();
            n.driver = std::make_unique<ReplicationDriver>(*n.replicator, 10);
        }
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
    RealNode nodes_[2];
};

TEST_F(GrpcLoopbackTest, WritesOnOneNodeAreAcknowledgedByAndReadableOnTheOther) {
    auto& a = nodes_[0];
    auto& b = nodes_[1];
    ASSERT_TRUE(eventually([&] { return a.replicator->members().size() == 2 && b.replicator->members().size() == 2; }))
        << "the nodes never heard each other";
    for (int i = 0; i < 20; ++i) {
        const std::string id = fmt::format("chat-{}", i);
        ASSERT_TRUE(a.store->create(id, "tenant", "t").ok());
        ASSERT_TRUE(a.store->append_message(id, {"user", fmt::format("question {}", i)}).ok());
        auto st = a.driver->await_replication(id, a.store->version(id).value(), 5000);
        ASSERT_TRUE(st.ok()) << st.error().message;
        // Acknowledged means durable on B already: readable there right now.
        auto there = b.store->get(id);
        ASSERT_TRUE(there.ok()) << id;
        EXPECT_EQ(there->messages.at(0).content, fmt::format("question {}", i));
    }
}

TEST_F(GrpcLoopbackTest, ConcurrentAppendsThroughBothNodesConverge) {
    auto& a = nodes_[0];
    auto& b = nodes_[1];
    ASSERT_TRUE(eventually([&] { return a.replicator->members().size() == 2 && b.replicator->members().size() == 2; }));
    ASSERT_TRUE(a.store->create("shared", "tenant", "t").ok());
    ASSERT_TRUE(a.driver->await_replication("shared", a.store->version("shared").value(), 5000).ok());
    std::thread writer_b([&] {
        for (int i = 0; i < 50; ++i) (void)b.store->append_message("shared", {"user", fmt::format("b{}", i)});
    });
    for (int i = 0; i < 50; ++i) (void)a.store->append_message("shared", {"user", fmt::format("a{}", i)});
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

TEST(GrpcTransportErrors, BadListenAddressesAreClearErrors) {
    auto r = GrpcTransport::start(GrpcTransportOptions{"no-port", 16});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("host:port"), std::string::npos);
    r = GrpcTransport::start(GrpcTransportOptions{"203.0.113.1:7001", 16});  // not an address of this machine
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kIo);
    EXPECT_NE(r.error().message.find("203.0.113.1:7001"), std::string::npos);
}

TEST(GrpcTransportErrors, SendingToNobodyNeitherBlocksNorGrowsWithoutBound) {
    auto t = GrpcTransport::start(GrpcTransportOptions{"127.0.0.1:0", 8});
    ASSERT_TRUE(t.ok());
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i) (*t)->send("127.0.0.1:1", std::string(100, 'x'));  // nothing listens on port 1
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
    EXPECT_GE((*t)->frames_dropped(), 900u) << "the queue is bounded";
}

#else

TEST(GrpcLoopback, Skipped) { GTEST_SKIP() << "built without gRPC (run scripts/install-deps.sh and reconfigure)"; }

#endif

}  // namespace
}  // namespace assistd::cluster
