// The replicator driven by hand: frames are held in a queue the test
// delivers (or loses) explicitly.
#include "cluster/replicator.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rocksdb/env.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>

#include "cluster/placement.h"
#include "state/durable_session_store.h"

namespace assistd::cluster {
namespace {

struct Sent {
    std::string from, to, bytes;
};

class QueueTransport final : public Transport {
  public:
    QueueTransport(std::deque<Sent>& queue, std::string from)
        : queue_(queue), from_(std::move(from)) {}
    void send(const std::string& address, std::string frame) override {
        queue_.push_back(Sent{from_, address, std::move(frame)});
    }

  private:
    std::deque<Sent>& queue_;
    std::string from_;
};

struct TestNode {
    std::string address;
    std::unique_ptr<state::DurableSessionStore> store;
    std::unique_ptr<StaticDiscovery> discovery;
    std::unique_ptr<QueueTransport> transport;
    std::unique_ptr<Replicator> replicator;
};

class ReplicatorTest : public ::testing::Test {
  protected:
    void make_fleet(int n, ReplicationOptions options) {
        std::vector<std::string> addresses;
        for (int i = 0; i < n; ++i) addresses.push_back(fmt::format("n{}:1", i));
        for (int i = 0; i < n; ++i) {
            auto node = std::make_unique<TestNode>();
            node->address = addresses[i];
            state::DurableSessionStoreOptions o;
            o.path = "/test/" + node->address;
            o.replica_id = replica_id_for(100 + i, 1);
            o.durability = state::DurableSessionStoreOptions::Durability::kSyncEachWrite;
            o.env = env_.get();
            node->store = std::move(state::DurableSessionStore::open(o, clock_).value());
            node->discovery = std::make_unique<StaticDiscovery>(addresses);
            node->transport = std::make_unique<QueueTransport>(queue_, node->address);
            NodeIdentity id{static_cast<NodeId>(100 + i), 1, o.replica_id};
            node->replicator =
                std::make_unique<Replicator>(id, node->address, options, *node->store,
                                             *node->transport, *node->discovery, clock_, 7 + i);
            node->replicator->start();
            nodes_.push_back(std::move(node));
        }
        settle();  // everyone hears everyone
    }
    TestNode* by_address(const std::string& a) {
        for (auto& n : nodes_) {
            if (n->address == a) return n.get();
        }
        return nullptr;
    }
    // Delivers queued frames (and what they cause) until quiet, except to `down`.
    void deliver(const std::string& down = "") {
        for (int guard = 0; guard < 100000 && !queue_.empty(); ++guard) {
            Sent s = std::move(queue_.front());
            queue_.pop_front();
            if (s.to == down || s.from == down) continue;
            if (auto* n = by_address(s.to)) n->replicator->receive(s.bytes);
        }
    }
    void settle(int ticks = 5, const std::string& down = "") {
        for (int i = 0; i < ticks; ++i) {
            clock_.advance_ms(50);
            for (auto& n : nodes_) {
                if (n->address != down) n->replicator->tick();
            }
            deliver(down);
        }
    }
    // A session id whose replicas are `replicas`, in placement order ("" if none of the first 100,000).
    std::string id_placed_on(const std::vector<NodeId>& replicas) const {
        for (int i = 0; i < 100000; ++i) {
            const std::string c = fmt::format("s{}", i);
            if (nodes_[0]->replicator->replicas(c) == replicas) return c;
        }
        return "";
    }
    size_t count_frames(MessageKind kind, const std::string& to) {
        size_t n = 0;
        for (const auto& s : queue_) {
            auto m = decode_message(s.bytes);
            if (m.ok() && kind_of(*m) == kind && s.to == to) ++n;
        }
        return n;
    }

    ManualClock clock_;
    std::unique_ptr<rocksdb::Env> env_{rocksdb::NewMemEnv(rocksdb::Env::Default())};
    std::deque<Sent> queue_;
    std::vector<std::unique_ptr<TestNode>> nodes_;
};

TEST_F(ReplicatorTest, AWriteIsAcknowledgedOnceAReplicaHoldsIt) {
    make_fleet(3, ReplicationOptions{});
    auto& a = *nodes_[0];
    ASSERT_TRUE(a.store->create("s1", "t", "hello").ok());
    ASSERT_TRUE(a.store->append_message("s1", {"user", "hi"}).ok());
    a.replicator->flush();
    std::optional<Status> result;
    a.replicator->await_replication("s1", a.store->version("s1").value(), 1000,
                                    [&](Status st) { result = st; });
    EXPECT_FALSE(result) << "nothing delivered yet";
    deliver();
    ASSERT_TRUE(result);
    EXPECT_TRUE(result->ok());
    for (auto& n : nodes_) {
        auto s = n->store->get("s1");
        ASSERT_TRUE(s.ok()) << n->address;
        ASSERT_EQ(s->messages.size(), 1u);
        EXPECT_EQ(s->messages[0].content, "hi");
    }
    EXPECT_EQ(a.replicator->unacknowledged(), 0u);
}

TEST_F(ReplicatorTest, WithNoReplicaReachableTheWaitTimesOutWithAClearMessage) {
    make_fleet(2, ReplicationOptions{});
    auto& a = *nodes_[0];
    ASSERT_TRUE(a.store->create("s1", "t", "x").ok());
    a.replicator->flush();
    std::optional<Status> result;
    a.replicator->await_replication("s1", a.store->version("s1").value(), 300,
                                    [&](Status st) { result = st; });
    queue_.clear();  // the network loses everything
    settle(3, nodes_[1]->address);
    EXPECT_FALSE(result) << "still within the timeout";
    settle(4, nodes_[1]->address);
    ASSERT_TRUE(result);
    ASSERT_FALSE(result->ok());
    EXPECT_EQ(result->error().code, ErrorCode::kResourceExhausted);
    EXPECT_NE(result->error().message.find("0 of 1"), std::string::npos) << result->error().message;
    EXPECT_EQ(a.replicator->stats().ack_timeouts, 1u);
    // Once the peer is back, the write still replicates (it was durable here).
    settle(30);
    EXPECT_TRUE(nodes_[1]->store->get("s1").ok());
}

// A partition: every node ticks, but frames from or to `isolated` are lost.
void settle_partitioned(ManualClock& clock, std::vector<std::unique_ptr<TestNode>>& nodes,
                        std::deque<Sent>& queue, const std::string& isolated, int ticks) {
    for (int i = 0; i < ticks; ++i) {
        clock.advance_ms(50);
        for (auto& n : nodes) n->replicator->tick();
        for (int guard = 0; guard < 100000 && !queue.empty(); ++guard) {
            Sent s = std::move(queue.front());
            queue.pop_front();
            if (s.to == isolated || s.from == isolated) continue;
            for (auto& n : nodes) {
                if (n->address == s.to) n->replicator->receive(s.bytes);
            }
        }
    }
}

TEST_F(ReplicatorTest, DegradedWritesKeepANodeCutOffFromItsReplicasAcknowledging) {
    ReplicationOptions o;
    o.degraded_writes = true;
    make_fleet(3, o);
    auto& a = *nodes_[0];
    auto& b = *nodes_[1];
    const std::string cut = a.address;
    // n0 is cut off. A write there waits while its peers are merely silent...
    ASSERT_TRUE(a.store->create("isolated", "t", "x").ok());
    a.replicator->flush();
    std::optional<Status> result;
    a.replicator->await_replication("isolated", a.store->version("isolated").value(), 5000,
                                    [&](Status st) { result = st; });
    settle_partitioned(clock_, nodes_, queue_, cut, 10);
    EXPECT_FALSE(result) << "peers silent for 500 ms are not suspect yet";
    // ... and is acknowledged once they turn suspect (suspect_after_ms 1000).
    settle_partitioned(clock_, nodes_, queue_, cut, 15);
    ASSERT_TRUE(result);
    EXPECT_TRUE(result->ok()) << result->error().message;
    EXPECT_EQ(a.replicator->stats().degraded_acks, 1u);
    // Later writes there are acknowledged at once.
    ASSERT_TRUE(a.store->append_message("isolated", {"user", "alone"}).ok());
    result.reset();
    a.replicator->await_replication("isolated", a.store->version("isolated").value(), 5000,
                                    [&](Status st) { result = st; });
    ASSERT_TRUE(result);
    EXPECT_TRUE(result->ok());
    EXPECT_EQ(a.replicator->stats().degraded_acks, 2u);
    // The majority side still gets its sync ack from a live replica: not degraded.
    ASSERT_TRUE(b.store->create("majority", "t", "y").ok());
    b.replicator->flush();
    result.reset();
    b.replicator->await_replication("majority", b.store->version("majority").value(), 5000,
                                    [&](Status st) { result = st; });
    EXPECT_FALSE(result) << "waits for n2's ack";
    settle_partitioned(clock_, nodes_, queue_, cut, 1);
    ASSERT_TRUE(result);
    EXPECT_TRUE(result->ok());
    EXPECT_EQ(b.replicator->stats().degraded_acks, 0u);
    EXPECT_FALSE(nodes_[2]->store->get("isolated").ok()) << "nothing crossed the cut";
    // Healed: both sides' writes reach every node.
    settle(30);
    for (auto& n : nodes_) {
        for (const char* id : {"isolated", "majority"}) {
            auto s = n->store->get(id);
            ASSERT_TRUE(s.ok()) << n->address << " " << id;
            EXPECT_EQ(n->store->version(id).value(), a.store->version(id).value());
        }
        EXPECT_EQ(n->store->get("isolated")->messages.size(), 1u);
    }
}

TEST_F(ReplicatorTest, ANodeCutOffNeverTakesAnUnknownIdForANewSession) {
    ReplicationOptions o;
    o.degraded_writes = true;
    o.replication_factor = 2;  // of 3 nodes: n0 replicates some sessions, not others
    make_fleet(3, o);
    auto& a = *nodes_[0];
    const NodeId self = 100;
    std::string mine, other;
    for (int i = 0; mine.empty() || other.empty(); ++i) {
        const std::string id = fmt::format("new{}", i);
        const auto reps = a.replicator->replicas(id);
        (std::find(reps.begin(), reps.end(), self) != reps.end() ? mine : other) = id;
    }
    ASSERT_TRUE(a.store->create("held", "t", "x").ok());
    std::optional<Status> got_mine, got_other, got_held;
    a.replicator->read(mine, 5000, [&](Status st) { got_mine = st; });
    a.replicator->read(other, 5000, [&](Status st) { got_other = st; });
    settle_partitioned(clock_, nodes_, queue_, a.address, 10);
    EXPECT_FALSE(got_mine) << "the peers are silent, not suspect yet";
    settle_partitioned(clock_, nodes_, queue_, a.address, 15);
    // Replica or not, an id nobody reachable answered for may exist elsewhere:
    // 503, never "new", with degraded writes too.
    for (auto* got : {&got_mine, &got_other}) {
        ASSERT_TRUE(*got);
        ASSERT_FALSE((*got)->ok());
        EXPECT_EQ((*got)->error().code, ErrorCode::kResourceExhausted) << (*got)->error().message;
        EXPECT_NE((*got)->error().message.find("only 0 can"), std::string::npos)
            << (*got)->error().message;
    }
    // Asked again once the peers are known to be down: answered at once.
    got_mine.reset();
    a.replicator->read(mine, 5000, [&](Status st) { got_mine = st; });
    ASSERT_TRUE(got_mine);
    EXPECT_EQ(got_mine->error().code, ErrorCode::kResourceExhausted);
    // A session held here is served from the copy here (degraded).
    a.replicator->read("held", 5000, [&](Status st) { got_held = st; });
    ASSERT_TRUE(got_held);
    EXPECT_TRUE(got_held->ok());
}

TEST_F(ReplicatorTest, WithoutDegradedWritesANodeCutOffFailsItsWritesAtTheDeadline) {
    make_fleet(3, ReplicationOptions{});
    auto& a = *nodes_[0];
    ASSERT_TRUE(a.store->create("isolated", "t", "x").ok());
    a.replicator->flush();
    std::optional<Status> result;
    a.replicator->await_replication("isolated", a.store->version("isolated").value(), 2000,
                                    [&](Status st) { result = st; });
    settle_partitioned(clock_, nodes_, queue_, a.address, 30);
    EXPECT_FALSE(result) << "suspect peers do not lower sync_acks";
    settle_partitioned(clock_, nodes_, queue_, a.address, 15);
    ASSERT_TRUE(result);
    ASSERT_FALSE(result->ok());
    EXPECT_NE(result->error().message.find("0 of 1"), std::string::npos) << result->error().message;
    EXPECT_EQ(a.replicator->stats().degraded_acks, 0u);
    // Nor is a session none of the (suspect) peers answered for taken as new,
    // nor one held here served without them.
    for (const char* id : {"unknown", "isolated"}) {
        std::optional<Status> read;
        a.replicator->read(id, 1000, [&](Status st) { read = st; });
        ASSERT_TRUE(read);
        EXPECT_EQ(read->error().code, ErrorCode::kResourceExhausted) << id << ": " << read->error().message;
    }
}

// Found by a chaos run (R=2 of 3, kills that overlap): a write acknowledged on
// its writer alone while the other replica was down, then the writer died, and
// a later turn elsewhere answered without it. Now a stand-in acknowledges it
// (a sloppy quorum), reads hear from it, and it hands the change to the
// replica when that is back.
TEST_F(ReplicatorTest, AWriteWhoseReplicaIsDownIsKeptByAStandInUntilTheReplicaIsBack) {
    ReplicationOptions o;
    o.replication_factor = 2;
    make_fleet(3, o);
    // A session whose replicas are n0 (the writer) and n1; n2 stands in.
    const std::string id = id_placed_on({100, 101});
    ASSERT_FALSE(id.empty());
    auto& writer = *nodes_[0];
    auto& replica = *nodes_[1];
    auto& stand_in = *nodes_[2];
    ASSERT_TRUE(writer.store->create(id, "t", "x").ok());
    writer.replicator->flush();
    deliver();
    ASSERT_TRUE(replica.store->get(id).ok());
    EXPECT_FALSE(stand_in.store->get(id).ok()) << "not a replica: no copy yet";

    // The replica dies. The write waits one heartbeat interval for it, then a
    // stand-in gets the session and acknowledges — before anyone is suspect.
    ASSERT_TRUE(writer.store->append_message(id, {"user", "acknowledged"}).ok());
    writer.replicator->flush();
    std::optional<Status> acked;
    writer.replicator->await_replication(id, writer.store->version(id).value(), 5000,
                                         [&](Status st) { acked = st; });
    settle(2, replica.address);
    EXPECT_FALSE(acked) << "within the hedge interval the replica may still answer";
    settle(6, replica.address);
    ASSERT_TRUE(acked);
    EXPECT_TRUE(acked->ok()) << acked->error().message;
    EXPECT_EQ(writer.replicator->stats().degraded_acks, 0u);
    ASSERT_TRUE(stand_in.store->get(id).ok());
    EXPECT_EQ(stand_in.store->get(id)->messages.size(), 1u);

    // The writer dies; the replica comes back and reads: the stand-in answers.
    std::optional<Status> read;
    replica.replicator->read(id, 5000, [&](Status st) { read = st; });
    deliver(writer.address);
    ASSERT_TRUE(read);
    EXPECT_TRUE(read->ok()) << read->error().message;
    ASSERT_EQ(replica.store->get(id)->messages.size(), 1u);
    EXPECT_EQ(replica.store->get(id)->messages[0].content, "acknowledged");
}

TEST_F(ReplicatorTest, AStandInHandsTheChangeItKeepsToTheReplicaWithoutARead) {
    ReplicationOptions o;
    o.replication_factor = 2;
    make_fleet(3, o);
    const std::string id = id_placed_on({100, 101});
    ASSERT_FALSE(id.empty());
    auto& writer = *nodes_[0];
    auto& replica = *nodes_[1];
    ASSERT_TRUE(writer.store->create(id, "t", "x").ok());
    writer.replicator->flush();
    deliver();
    // The replica is down long enough to turn suspect: the stand-in is asked at once.
    settle(25, replica.address);
    ASSERT_TRUE(writer.store->append_message(id, {"user", "kept by the stand-in"}).ok());
    writer.replicator->flush();
    std::optional<Status> acked;
    writer.replicator->await_replication(id, writer.store->version(id).value(), 5000,
                                         [&](Status st) { acked = st; });
    deliver(replica.address);
    ASSERT_TRUE(acked && acked->ok());
    // The writer dies for good; the replica is back. Anti-entropy's hand-off
    // brings the change over with no read asking for it.
    settle(40, writer.address);
    ASSERT_EQ(replica.store->get(id)->messages.size(), 1u);
    EXPECT_EQ(replica.store->get(id)->messages[0].content, "kept by the stand-in");
}

TEST_F(ReplicatorTest, BackPressureBoundsWhatIsInFlightPerPeer) {
    ReplicationOptions o;
    o.max_batch_bytes = 1000;
    o.max_inflight_batches = 3;
    o.max_inflight_bytes = 1 << 20;
    make_fleet(2, o);
    auto& a = *nodes_[0];
    const std::string big(900, 'x');
    for (int i = 0; i < 20; ++i) {
        const std::string id = fmt::format("s{}", i);
        ASSERT_TRUE(a.store->create(id, "t", "x").ok());
        ASSERT_TRUE(a.store->append_message(id, {"user", big}).ok());
    }
    a.replicator->flush();
    const std::string b = nodes_[1]->address;
    EXPECT_EQ(count_frames(MessageKind::kDeltas, b), 3u)
        << "no more batches than the in-flight limit";
    EXPECT_EQ(a.replicator->unacknowledged(), 20u);
    deliver();
    EXPECT_EQ(a.replicator->unacknowledged(), 0u) << "each ack lets the next batch go";
    EXPECT_EQ(nodes_[1]->store->list_versions().size(), 20u);
    // Each session's delta (~900 bytes) nearly fills a 1000-byte batch: two never share one.
    EXPECT_EQ(a.replicator->stats().batches_sent, 20u);
}

TEST_F(ReplicatorTest, LostBatchesAreSentAgainAfterTheAckTimeout) {
    ReplicationOptions o;
    o.ack_timeout_ms = 100;
    make_fleet(2, o);
    auto& a = *nodes_[0];
    ASSERT_TRUE(a.store->create("s1", "t", "x").ok());
    a.replicator->flush();
    queue_.clear();  // the batch is lost
    settle(4);
    EXPECT_GE(a.replicator->stats().batches_resent, 1u);
    EXPECT_TRUE(nodes_[1]->store->get("s1").ok());
}

TEST_F(ReplicatorTest, AReadOfASessionNotHeldPullsItOrSaysItIsNowhere) {
    ReplicationOptions o;
    o.replication_factor = 2;
    make_fleet(3, o);
    // A session whose replicas are n0 and n1; n2 lacks it.
    const std::string id = id_placed_on({100, 101});
    ASSERT_FALSE(id.empty());
    ASSERT_TRUE(nodes_[0]->store->create(id, "t", "x").ok());
    ASSERT_TRUE(nodes_[0]->store->append_message(id, {"user", "first"}).ok());
    nodes_[0]->replicator->flush();
    deliver();
    auto& c = *nodes_[2];
    ASSERT_FALSE(c.store->get(id).ok());
    std::optional<Status> fetched;
    c.replicator->read(id, 500, [&](Status st) { fetched = st; });
    deliver();
    ASSERT_TRUE(fetched);
    EXPECT_TRUE(fetched->ok()) << fetched->error().message;
    EXPECT_EQ(c.store->get(id).value().messages.at(0).content, "first");

    // N = 3 nodes, W = 2 copies: one other node's answer settles it.
    EXPECT_EQ(c.replicator->read_quorum(), 1u);
    std::optional<Status> nowhere;
    c.replicator->read("never-created", 500, [&](Status st) { nowhere = st; });
    deliver(nodes_[0]->address);  // n0 is silent (not suspect yet): n1 alone answers
    ASSERT_TRUE(nowhere);
    EXPECT_EQ(nowhere->error().code, ErrorCode::kNotFound);
    EXPECT_NE(nowhere->error().message.find("does not exist"), std::string::npos);
    EXPECT_GE(c.replicator->stats().fetches, 2u);
}

TEST_F(ReplicatorTest, DeletionsReplicateAsTombstones) {
    make_fleet(3, ReplicationOptions{});
    auto& a = *nodes_[0];
    ASSERT_TRUE(a.store->create("gone", "t", "x").ok());
    a.replicator->flush();
    deliver();
    ASSERT_TRUE(nodes_[2]->store->get("gone").ok());
    ASSERT_TRUE(nodes_[1]->store->remove("gone").ok());
    nodes_[1]->replicator->flush();
    std::optional<Status> acked;
    nodes_[1]->replicator->await_replication("gone", {}, 500, [&](Status st) { acked = st; });
    deliver();
    ASSERT_TRUE(acked);
    EXPECT_TRUE(acked->ok());
    for (auto& n : nodes_) EXPECT_TRUE(n->store->deleted("gone")) << n->address;
}

TEST_F(ReplicatorTest, AntiEntropyRepairsWhatAPartitionMissed) {
    ReplicationOptions o;
    o.anti_entropy_interval_ms = 200;
    make_fleet(3, o);
    const std::string a = nodes_[0]->address, c = nodes_[2]->address;
    for (int i = 0; i < 30; ++i) {
        ASSERT_TRUE(nodes_[0]->store->create(fmt::format("s{}", i), "t", "x").ok());
    }
    nodes_[0]->replicator->flush();
    deliver(c);  // n2 is cut off and misses the pushes; n1 gets them
    EXPECT_EQ(nodes_[1]->store->list_versions().size(), 30u);
    EXPECT_EQ(nodes_[2]->store->list_versions().size(), 0u);
    // The writer dies before it could resend: only anti-entropy between n1
    // and n2 (n1 never forwards what it received) can bring n2 up to date.
    settle(20, a);
    EXPECT_EQ(nodes_[2]->store->list_versions().size(), 30u);
    EXPECT_GT(nodes_[1]->replicator->stats().repairs_pushed +
                  nodes_[2]->replicator->stats().repairs_pulled,
              0u);
}

TEST_F(ReplicatorTest, ALeavingNodeHandsEverySessionToTheRemainingReplicas) {
    // R=2 of 3: the sessions n0 replicates with one other node need a new
    // second replica once n0 leaves; the drain waits until they have it.
    ReplicationOptions o;
    o.replication_factor = 2;
    o.anti_entropy_interval_ms = 200;
    make_fleet(3, o);
    auto& a = *nodes_[0];
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(a.store->create(fmt::format("s{}", i), "t", "x").ok());
    a.replicator->flush();
    settle();
    EXPECT_EQ(a.replicator->unacknowledged(), 0u);
    EXPECT_EQ(a.replicator->unhanded(), 0u) << "n0 replicates what it holds: nothing to hand off";

    a.replicator->leave();
    EXPECT_GT(a.replicator->unhanded(), 0u) << "every session now belongs to the others";
    settle(10);
    EXPECT_EQ(a.replicator->unhanded(), 0u);
    // Both remaining nodes hold every session (R=2 over the two of them).
    for (int i = 1; i < 3; ++i)
        EXPECT_EQ(nodes_[static_cast<size_t>(i)]->store->list_versions().size(), 20u) << i;
}

TEST_F(ReplicatorTest, ADrainPushesUnacknowledgedChangesThenItsDepartureTakesItOutOfPlacement) {
    ReplicationOptions o;
    o.ack_timeout_ms = 200;
    make_fleet(3, o);  // R=3: every node replicates every session
    auto& a = *nodes_[0];
    const std::string c_addr = nodes_[2]->address;
    for (int i = 0; i < 10; ++i) {
        const std::string id = fmt::format("s{}", i);
        ASSERT_TRUE(a.store->create(id, "t", "x").ok());
        ASSERT_TRUE(a.store->append_message(id, {"user", "written before the drain"}).ok());
    }
    a.replicator->flush();
    // Everything bound for n2 is lost; n1 acknowledges (what sync acks 1 waits for).
    std::erase_if(queue_, [&](const Sent& f) { return f.to == c_addr; });
    deliver();
    ASSERT_EQ(a.replicator->unacknowledged(), 10u) << "n2 has acknowledged nothing";
    ASSERT_FALSE(nodes_[2]->store->get("s0").ok());

    // The drain: leave, then wait (bounded) until every live replica
    // acknowledged and holds every session, as FleetNode::leave_and_flush does.
    a.replicator->leave();
    int ticks = 0;
    while ((a.replicator->unacknowledged() > 0 || a.replicator->unhanded() > 0) && ticks < 40) {
        settle(1);
        ++ticks;
    }
    EXPECT_EQ(a.replicator->unacknowledged(), 0u);
    EXPECT_EQ(a.replicator->unhanded(), 0u);
    for (int i = 0; i < 10; ++i) {
        const std::string id = fmt::format("s{}", i);
        EXPECT_TRUE(nodes_[2]->store->version(id).value().dominates(a.store->version(id).value()))
            << id << ": the unacknowledged change reached n2 before n0 went";
    }
    // Until it announces its departure, the others still count n0 a member.
    EXPECT_EQ(nodes_[1]->replicator->members(), (std::vector<NodeId>{100, 101, 102}));

    a.replicator->announce_departure();
    EXPECT_EQ(a.replicator->departure_unconfirmed(), 2u);
    deliver();  // no time passes: nothing here is suspicion
    EXPECT_EQ(a.replicator->departure_unconfirmed(), 0u);
    for (int i = 1; i < 3; ++i) {
        auto& r = *nodes_[static_cast<size_t>(i)]->replicator;
        EXPECT_EQ(r.members(), (std::vector<NodeId>{101, 102})) << i;
        for (const auto& p : r.peers()) {
            if (p.node_id == 100) {
                EXPECT_EQ(p.health, PeerHealth::kDeparted) << i;
            }
        }
        EXPECT_EQ(r.stats().departures, 1u);
        for (int k = 0; k < 10; ++k) EXPECT_NE(r.primary(fmt::format("s{}", k)), NodeId{100});
    }
    // n0 still talks until it exits (heartbeats of the same life): it stays out.
    settle(3);
    EXPECT_EQ(nodes_[1]->replicator->members(), (std::vector<NodeId>{101, 102}));

    // A change on n1 now waits for n2 only and pushes nothing to n0.
    auto& b = *nodes_[1];
    ASSERT_TRUE(b.store->append_message("s0", {"user", "after the drain"}).ok());
    b.replicator->flush();
    EXPECT_EQ(count_frames(MessageKind::kDeltas, a.address), 0u);
    std::optional<Status> acked;
    b.replicator->await_replication("s0", b.store->version("s0").value(), 1000,
                                    [&](Status st) { acked = st; });
    deliver();
    ASSERT_TRUE(acked);
    EXPECT_TRUE(acked->ok());

    // n0 restarts (its next life): its first heartbeat makes it a member again
    // and anti-entropy brings it what it missed.
    a.replicator.reset();
    NodeIdentity again{100, 2, replica_id_for(100, 2)};
    a.replicator = std::make_unique<Replicator>(again, a.address, o, *a.store, *a.transport,
                                                *a.discovery, clock_, 99);
    a.replicator->start();
    settle(10);
    for (int i = 1; i < 3; ++i)
        EXPECT_EQ(nodes_[static_cast<size_t>(i)]->replicator->members(),
                  (std::vector<NodeId>{100, 101, 102}))
            << i;
    EXPECT_EQ(a.store->get("s0").value().messages.back().content, "after the drain");
}

TEST_F(ReplicatorTest, ACopyOutsideTheReplicaSetIsRefreshedBeforeItIsRead) {
    ReplicationOptions o;
    o.replication_factor = 2;
    make_fleet(3, o);
    // A session whose replicas are two nodes; the third (the outsider) reads it.
    std::string id;
    TestNode* outsider = nullptr;
    std::vector<TestNode*> replicas;
    for (int i = 0; i < 50 && !outsider; ++i) {
        id = fmt::format("s{}", i);
        replicas.clear();
        for (auto& n : nodes_) {
            if (n->replicator->replicates(id))
                replicas.push_back(n.get());
            else
                outsider = n.get();
        }
    }
    ASSERT_TRUE(outsider);
    ASSERT_EQ(replicas.size(), 2u);
    TestNode& writer = *replicas[0];
    ASSERT_TRUE(writer.store->create(id, "t", "x").ok());
    ASSERT_TRUE(writer.store->append_message(id, {"user", "one"}).ok());
    writer.replicator->flush();
    deliver();
    std::optional<Status> fetched;
    outsider->replicator->read(id, 1000, [&](Status st) { fetched = st; });
    deliver();
    ASSERT_TRUE(fetched && fetched->ok());

    // The replicas move on; the outsider gets no pushes and falls behind.
    ASSERT_TRUE(writer.store->append_message(id, {"user", "two"}).ok());
    writer.replicator->flush();
    deliver();
    EXPECT_EQ(outsider->store->get(id)->messages.size(), 1u);

    std::optional<Status> refreshed;
    outsider->replicator->read(id, 1000, [&](Status st) { refreshed = st; });
    EXPECT_FALSE(refreshed) << "it waits for an answer";
    deliver();
    ASSERT_TRUE(refreshed);
    EXPECT_TRUE(refreshed->ok());
    EXPECT_EQ(outsider->store->get(id)->messages.size(), 2u);

    // One replica silent: the other's answer is enough (N - W = 1), no waiting for suspicion.
    ASSERT_TRUE(writer.store->append_message(id, {"user", "three"}).ok());
    writer.replicator->flush();
    deliver();
    refreshed.reset();
    outsider->replicator->read(id, 5000, [&](Status st) { refreshed = st; });
    deliver(replicas[1]->address);
    ASSERT_TRUE(refreshed);
    EXPECT_TRUE(refreshed->ok());
    EXPECT_EQ(outsider->store->get(id)->messages.size(), 3u);
    EXPECT_EQ(outsider->replicator->stats().refreshes, 2u);

    // A session nobody holds: not found, not a timeout.
    refreshed.reset();
    outsider->replicator->read("nowhere", 1000, [&](Status st) { refreshed = st; });
    settle(2);
    ASSERT_TRUE(refreshed);
    EXPECT_EQ(refreshed->error().code, ErrorCode::kNotFound);
}

TEST_F(ReplicatorTest, AQuorumReadOnAReplicaSeesAChangeItsDeadWriterNeverPushedThere) {
    make_fleet(3, ReplicationOptions{});  // R=3, sync acks 1
    auto& writer = *nodes_[0];
    auto& lagging = *nodes_[2];
    ASSERT_TRUE(writer.store->create("s", "t", "x").ok());
    writer.replicator->flush();
    deliver();
    // n1 acknowledges the next change; the push to n2 is lost, then the writer dies.
    ASSERT_TRUE(writer.store->append_message("s", {"user", "acknowledged"}).ok());
    writer.replicator->flush();
    std::optional<Status> acked;
    writer.replicator->await_replication("s", writer.store->version("s").value(), 1000,
                                         [&](Status st) { acked = st; });
    deliver(lagging.address);
    ASSERT_TRUE(acked && acked->ok());
    EXPECT_EQ(lagging.store->get("s")->messages.size(), 0u);

    // A read needs N - (sync acks + 1) = 1 other node's answer.
    EXPECT_EQ(lagging.replicator->read_quorum(), 1u);
    std::optional<Status> read;
    lagging.replicator->read("s", 1000, [&](Status st) { read = st; });
    deliver(writer.address);  // the writer is dead but not yet suspect: n1 alone answers
    ASSERT_TRUE(read);
    EXPECT_TRUE(read->ok());
    ASSERT_EQ(lagging.store->get("s")->messages.size(), 1u);
    EXPECT_EQ(lagging.store->get("s")->messages[0].content, "acknowledged");

    // Current already: the answer is a "nothing newer" reply, not a push.
    read.reset();
    lagging.replicator->read("s", 1000, [&](Status st) { read = st; });
    EXPECT_EQ(count_frames(MessageKind::kPull, nodes_[1]->address), 1u);
    deliver(writer.address);
    ASSERT_TRUE(read);
    EXPECT_TRUE(read->ok());
}

// Found by the chaos e2e test (an acknowledged answer out of place after a
// turn on another node): a quorum read must count only the replicas' answers
// to its own pull. A message a replica sent before it got the pull (the ack
// of an earlier push from the reader, or a push of its own computed earlier)
// says nothing about what the reader lacks now.
TEST_F(ReplicatorTest, AQuorumReadCountsOnlyAnswersToItsOwnPull) {
    make_fleet(3, ReplicationOptions{});  // R=3, sync acks 1
    auto& writer = *nodes_[0];
    auto& other = *nodes_[1];
    auto& reader = *nodes_[2];
    ASSERT_TRUE(reader.store->create("s", "t", "x").ok());
    reader.replicator->flush();
    deliver();
    // The reader's own earlier turn and the other replica's own change are
    // still on their way when the writer's acknowledged change arrives at
    // the other replica (the push to the reader is lost, the writer dies).
    ASSERT_TRUE(reader.store->append_message("s", {"user", "earlier, by the reader"}).ok());
    reader.replicator->flush();
    ASSERT_TRUE(other.store->append_message("s", {"user", "earlier, by the other"}).ok());
    other.replicator->flush();
    std::deque<Sent> held;
    held.swap(queue_);  // those pushes, delivered later
    ASSERT_TRUE(writer.store->append_message("s", {"assistant", "acknowledged"}).ok());
    writer.replicator->flush();
    std::optional<Status> acked;
    writer.replicator->await_replication("s", writer.store->version("s").value(), 1000,
                                         [&](Status st) { acked = st; });
    deliver(reader.address);
    ASSERT_TRUE(acked && acked->ok());

    // The reader's quorum read starts; the old pushes and their acks arrive
    // before the answers to its pull.
    std::optional<Status> read;
    size_t messages_at_read = 0;
    reader.replicator->read("s", 1000, [&](Status st) {
        read = st;
        messages_at_read = reader.store->get("s")->messages.size();
    });
    std::deque<Sent> pulls;
    pulls.swap(queue_);
    for (auto& h : held) queue_.push_back(std::move(h));
    deliver(writer.address);  // the old pushes and their acks
    for (auto& p : pulls) queue_.push_back(std::move(p));
    deliver(writer.address);  // the pull and its answers
    ASSERT_TRUE(read);
    EXPECT_TRUE(read->ok());
    EXPECT_EQ(messages_at_read, 3u) << "the read completed before the reader held the acknowledged change";
    EXPECT_EQ(reader.store->get("s")->messages.size(), 3u);
}

// Also found by the chaos test: a replica that just restarted still has
// batches of its peers' in flight from its old life (unacknowledged until the
// ack timeout), so their pushes to it wait. A quorum read's answer must not
// wait behind them: what the reader lacks comes with the reply. And a quorum
// read that hears from too few replicas in time fails rather than serve a
// copy that may miss an acknowledged change.
TEST_F(ReplicatorTest, AQuorumReadIsAnsweredPastBackPressureAndFailsShortOfItsQuorum) {
    ReplicationOptions o;
    o.max_inflight_batches = 1;
    make_fleet(3, o);
    auto& writer = *nodes_[0];
    auto& other = *nodes_[1];
    auto& reader = *nodes_[2];
    ASSERT_TRUE(writer.store->create("s", "t", "x").ok());
    writer.replicator->flush();
    deliver();
    // A batch to the reader is lost: the writer's one in-flight slot for it stays taken.
    ASSERT_TRUE(writer.store->append_message("s", {"user", "one"}).ok());
    writer.replicator->flush();
    std::erase_if(queue_, [&](const Sent& f) { return f.from == writer.address && f.to == reader.address; });
    deliver();
    ASSERT_TRUE(writer.store->append_message("s", {"assistant", "two"}).ok());
    writer.replicator->flush();
    std::optional<Status> acked;
    writer.replicator->await_replication("s", writer.store->version("s").value(), 1000,
                                         [&](Status st) { acked = st; });
    deliver();
    ASSERT_TRUE(acked && acked->ok());
    EXPECT_EQ(reader.store->get("s")->messages.size(), 0u) << "the batches to the reader wait";

    // The other replica is silent (not suspect yet): the writer's answer alone completes the read.
    std::optional<Status> read;
    size_t messages_at_read = 0;
    reader.replicator->read("s", 500, [&](Status st) {
        read = st;
        messages_at_read = reader.store->get("s")->messages.size();
    });
    deliver(other.address);
    ASSERT_TRUE(read) << "the answer waited behind the in-flight batch";
    EXPECT_TRUE(read->ok());
    EXPECT_EQ(messages_at_read, 2u);

    // Nobody answers within the read's timeout (500 ms, before anyone turns suspect): 503, not the old copy.
    read.reset();
    reader.replicator->read("s", 500, [&](Status st) { read = st; });
    queue_.clear();
    clock_.advance_ms(600);
    reader.replicator->tick();
    ASSERT_TRUE(read);
    ASSERT_FALSE(read->ok());
    EXPECT_EQ(read->error().code, ErrorCode::kResourceExhausted);
    EXPECT_NE(read->error().message.find("may miss an acknowledged change"), std::string::npos)
        << read->error().message;
}

TEST_F(ReplicatorTest, GarbageFramesAreCountedAndIgnored) {
    make_fleet(2, ReplicationOptions{});
    nodes_[0]->replicator->receive("GET / HTTP/1.1\r\n\r\n");
    nodes_[0]->replicator->receive("");
    EXPECT_EQ(nodes_[0]->replicator->stats().frames_rejected, 2u);
    // A well-formed delta that is not a session delta is rejected by the store, and still
    // acknowledged.
    Deltas m;
    m.from = 101;
    m.from_address = nodes_[1]->address;
    m.id = 9;
    m.items = {{"s1", "not a delta"}};
    nodes_[0]->replicator->receive(encode_message(m));
    EXPECT_EQ(nodes_[0]->replicator->stats().apply_errors, 1u);
    EXPECT_EQ(count_frames(MessageKind::kAck, nodes_[1]->address), 1u);
}

TEST(ReplicationOptionsTest, OutOfRangeOptionsAreNamed) {
    EXPECT_TRUE(validate(ReplicationOptions{}).ok());
    ReplicationOptions o;
    o.replication_factor = 0;
    EXPECT_NE(validate(o).error().message.find("replication factor"), std::string::npos);
    o = {};
    o.sync_acks = 3;
    EXPECT_NE(validate(o).error().message.find("sync acks"), std::string::npos);
    o = {};
    o.replication_factor = 1;
    o.sync_acks = 0;
    EXPECT_TRUE(validate(o).ok());
    o.sync_acks = 1;  // one replica: nobody to acknowledge
    EXPECT_FALSE(validate(o).ok());
    o = {};
    o.sync_acks = -1;
    EXPECT_FALSE(validate(o).ok());
    o = {};
    o.suspect_after_ms = o.heartbeat_interval_ms;
    EXPECT_FALSE(validate(o).ok());
    o = {};
    o.max_inflight_batches = 0;
    EXPECT_FALSE(validate(o).ok());
}

}  // namespace
}  // namespace assistd::cluster
