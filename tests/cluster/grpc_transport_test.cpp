// Real nodes on loopback, replicating over the gRPC transport with mutual
// TLS: durable stores in temp dirs, the real-time driver, the system clock;
// and what a peer that cannot prove who it is gets (nothing).
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
#include "cluster/messages.h"
#include "cluster/replicator.h"
#include "cluster/test_fleet_ca.h"
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
        for (int i = 0; i < count; ++i) {
            auto& n = nodes_[i];
            auto t = GrpcTransport::start(tls_options(ca_, node_name(i)));
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
            n.transport->set_handler([r](std::string_view frame, const FrameOrigin& origin) {
                r->receive(frame, origin);
            });
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

    // Node i's id is 1000 + i, so its certificate names it in hex.
    static std::string node_name(int i) { return fmt::format("{:x}", 1000 + i); }
    static GrpcTransportOptions tls_options(const TestFleetCa& ca, const std::string& name,
                                            const std::string& listen = "127.0.0.1:0") {
        GrpcTransportOptions o;
        o.listen_address = listen;
        o.tls = ca.issue(name);
        return o;
    }

    TestFleetCa ca_;
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

// An attacker's frames: deltas that would create a session on a receiver that applied them.
std::string forged_deltas_frame(NodeId claimed, const std::string& from_address,
                                const std::string& session_id, const std::filesystem::path& dir) {
    state::DurableSessionStoreOptions so;
    so.path = dir.string();
    so.replica_id = 777;
    auto store = state::DurableSessionStore::open(so, SystemClock::instance());
    EXPECT_TRUE(store.ok());
    EXPECT_TRUE((*store)->create(session_id, "victim-tenant", "forged").ok());
    EXPECT_TRUE((*store)->append_message(session_id, {"user", "forged text"}).ok());
    Deltas m;
    m.from = claimed;
    m.from_address = from_address;
    m.id = 1;
    m.items.push_back({session_id, (*store)->changes_since(session_id, {}).value()});
    return encode_message(m);
}

std::string pull_frame(NodeId claimed, const std::string& from_address,
                       const std::string& session_id) {
    Pull m;
    m.from = claimed;
    m.from_address = from_address;
    m.states.push_back({session_id, SessionState::Kind::kMissing, {}});
    return encode_message(m);
}

size_t thread_count() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
    return n;
}

// What a receiver node gets from senders that cannot prove who they are:
// `send(sender)` pushes forged frames; afterwards the node must hold nothing of them.
class PeerAuthTest : public GrpcLoopbackTest {
  protected:
    void SetUp() override {
        GrpcLoopbackTest::SetUp();
        ASSERT_NO_FATAL_FAILURE(start_fleet(2));
        std::filesystem::create_directories(dir_);
    }
    // Sends `frame` from `sender` to node 0 for ~1 s (a handshake retries).
    void push_for_a_while(GrpcTransport& sender, const std::string& frame) {
        for (int i = 0; i < 20; ++i) {
            sender.send(nodes_[0].address, frame);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    bool node0_holds(const std::string& id) { return nodes_[0].store->get(id).ok(); }
};

TEST_F(PeerAuthTest, APeerWithoutACertificateIsRefusedAtTheHandshake) {
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.insecure = true;  // plaintext: no certificate at all
    auto sender = GrpcTransport::start(o);
    ASSERT_TRUE(sender.ok()) << sender.error().message;
    const auto before = nodes_[0].replicator->stats();
    push_for_a_while(**sender, forged_deltas_frame(1001, "127.0.0.1:1", "no-cert", dir_ / "a"));
    EXPECT_FALSE(node0_holds("no-cert"));
    // Refused before any frame was read: nothing reached the replicator at all.
    EXPECT_EQ(nodes_[0].replicator->stats().deltas_applied, before.deltas_applied);
    EXPECT_EQ(nodes_[0].replicator->stats().frames_unauthorized, before.frames_unauthorized);
}

TEST_F(PeerAuthTest, APeerWithACertificateFromAnotherCaIsRefused) {
    const TestFleetCa other("other");
    auto sender = GrpcTransport::start(tls_options(other, node_name(1)));
    ASSERT_TRUE(sender.ok()) << sender.error().message;
    const auto before = nodes_[0].replicator->stats();
    push_for_a_while(**sender,
                     forged_deltas_frame(1001, "127.0.0.1:1", "other-ca", dir_ / "b"));
    EXPECT_FALSE(node0_holds("other-ca"));
    EXPECT_EQ(nodes_[0].replicator->stats().frames_unauthorized, before.frames_unauthorized)
        << "refused at the handshake, not later";
}

TEST_F(PeerAuthTest, AValidCertificateClaimingAnotherNodesIdIsRefusedFrameByFrame) {
    // A certificate of this fleet's CA for node 0x7ab, whose frames claim to be node 1 (1001).
    auto sender = GrpcTransport::start(tls_options(ca_, "7ab"));
    ASSERT_TRUE(sender.ok()) << sender.error().message;
    push_for_a_while(**sender, forged_deltas_frame(1001, nodes_[1].address, "claimed", dir_ / "c"));
    EXPECT_FALSE(node0_holds("claimed"));
    EXPECT_GT(nodes_[0].replicator->stats().frames_unauthorized, 0u);
    // The same certificate speaking as itself is a peer like any other.
    push_for_a_while(**sender, forged_deltas_frame(0x7ab, "127.0.0.1:1", "as-itself", dir_ / "d"));
    EXPECT_TRUE(eventually([&] { return node0_holds("as-itself"); }));
}

TEST_F(PeerAuthTest, APullWithAForgedReplyAddressSendsNoData) {
    ASSERT_TRUE(nodes_[0].store->create("secret", "tenant", "t").ok());
    ASSERT_TRUE(nodes_[0].store->append_message("secret", {"user", "private"}).ok());
    // The attacker listens on another loopback address and asks node 0, as node 1
    // would, to send the session there; its connection comes from 127.0.0.1.
    std::atomic<int> received{0};
    auto listener = GrpcTransport::start(tls_options(ca_, "7ac", "127.0.0.2:0"));
    ASSERT_TRUE(listener.ok()) << listener.error().message;
    (*listener)->set_handler([&](std::string_view, const FrameOrigin&) { ++received; });
    const std::string trap = fmt::format("127.0.0.2:{}", (*listener)->port());
    auto sender = GrpcTransport::start(tls_options(ca_, "7ad"));
    ASSERT_TRUE(sender.ok()) << sender.error().message;
    push_for_a_while(**sender, pull_frame(0x7ad, trap, "secret"));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(received.load(), 0) << "node 0 answered an address the frame named";
    EXPECT_GT(nodes_[0].replicator->stats().frames_unauthorized, 0u);
    (*listener)->set_handler(nullptr);
}

TEST_F(PeerAuthTest, ManyForgedAddressesCreateNoThreadsOrLinks) {
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.insecure = true;
    auto plain = GrpcTransport::start(o);
    ASSERT_TRUE(plain.ok());
    auto wrong_id = GrpcTransport::start(tls_options(ca_, "7ae"));
    ASSERT_TRUE(wrong_id.ok());
    // Warm both senders' own single link up before counting.
    push_for_a_while(**plain, pull_frame(1001, "127.0.0.1:1", "x"));
    push_for_a_while(**wrong_id, pull_frame(1001, "127.0.0.1:1", "x"));
    const size_t links_before = nodes_[0].transport->links();
    const size_t peers_before = nodes_[0].replicator->peers().size();
    const size_t threads_before = thread_count();
    for (int port = 20000; port < 20300; ++port) {
        const std::string forged = fmt::format("127.0.0.1:{}", port);
        (*plain)->send(nodes_[0].address, pull_frame(1001, forged, "x"));
        (*wrong_id)->send(nodes_[0].address, pull_frame(1001, forged, "x"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    EXPECT_EQ(nodes_[0].transport->links(), links_before);
    EXPECT_EQ(nodes_[0].replicator->peers().size(), peers_before);
    EXPECT_LT(thread_count(), threads_before + 8) << "300 forged addresses, threads grew";
}

TEST(GrpcTransportErrors, TheLinkCapBoundsOutgoingStreams) {
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.insecure = true;
    o.max_links = 4;
    auto t = GrpcTransport::start(o);
    ASSERT_TRUE(t.ok());
    for (int port = 1; port <= 50; ++port) (*t)->send(fmt::format("127.0.0.1:{}", port), "x");
    EXPECT_EQ((*t)->links(), 4u);
    EXPECT_EQ((*t)->links_refused(), 46u);
}

TEST(GrpcTransportErrors, AtTheLinkCapAnIdleLinkMakesRoomForANewPeer) {
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.insecure = true;
    o.max_links = 4;
    o.link_idle_ms = 200;
    auto t = GrpcTransport::start(o);
    ASSERT_TRUE(t.ok());
    for (int port = 1; port <= 4; ++port) (*t)->send(fmt::format("127.0.0.1:{}", port), "x");
    (*t)->send("127.0.0.1:5", "x");  // none idle yet: refused
    EXPECT_EQ((*t)->links_refused(), 1u);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (*t)->send("127.0.0.1:4", "x");  // still in use
    for (int port = 5; port <= 7; ++port) (*t)->send(fmt::format("127.0.0.1:{}", port), "x");
    EXPECT_EQ((*t)->links(), 4u);
    EXPECT_EQ((*t)->links_refused(), 1u) << "the three idle links made room for three new peers";
    (*t)->send("127.0.0.1:8", "x");  // the rest were just used: refused again
    EXPECT_EQ((*t)->links_refused(), 2u);
}

TEST(GrpcTransportErrors, TlsFilesThatDoNotFitAreClearErrors) {
    const TestFleetCa ca;
    const TestFleetCa other("other");
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.tls = ca.issue("node-a");
    o.tls.ca_path = other.issue("node-b").ca_path;  // a CA that did not sign the certificate
    auto r = GrpcTransport::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("does not chain to --peer-tls-ca"), std::string::npos)
        << r.error().message;
    o.tls = ca.issue("node-a");
    o.tls.key_path = ca.issue("node-b").key_path;  // another certificate's key
    r = GrpcTransport::start(o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("is not the key of"), std::string::npos) << r.error().message;
    o.tls = {};
    r = GrpcTransport::start(o);  // neither TLS nor insecure
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("--peer-tls-cert"), std::string::npos) << r.error().message;
}

TEST(GrpcTransportErrors, BadListenAddressesAreClearErrors) {
    auto plain = [](const std::string& listen) {
        GrpcTransportOptions o;
        o.listen_address = listen;
        o.insecure = true;
        return o;
    };
    auto r = GrpcTransport::start(plain("no-port"));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("host:port"), std::string::npos);
    r = GrpcTransport::start(plain("203.0.113.1:7001"));  // not an address of this machine
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kIo);
    EXPECT_NE(r.error().message.find("203.0.113.1:7001"), std::string::npos);
}

TEST(GrpcTransportErrors, SendingToNobodyNeitherBlocksNorGrowsWithoutBound) {
    GrpcTransportOptions o;
    o.listen_address = "127.0.0.1:0";
    o.max_queued_frames = 8;
    o.insecure = true;
    auto t = GrpcTransport::start(o);
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
