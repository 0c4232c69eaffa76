#include "cluster/membership.h"

#include <gtest/gtest.h>

namespace assistd::cluster {
namespace {

class FakeResolver final : public Resolver {
  public:
    std::vector<std::string> ips;
    bool fail = false;
    int calls = 0;
    Result<std::vector<std::string>> resolve(const std::string& host) override {
        ++calls;
        if (fail)
            return make_error(ErrorCode::kNotFound, "cannot resolve '" + host + "': no such name");
        return ips;
    }
};

TEST(PeerList, ParsesAndRejectsWithTheBadEntryNamed) {
    auto ok = parse_peer_list("b:2,a:1,,a:1");
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(*ok, (std::vector<std::string>{"a:1", "b:2"}));
    for (const char* bad :
         {"", ",", "host", "host:", ":80", "host:0", "host:65536", "host:12a", "h:1,x"}) {
        auto r = parse_peer_list(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    }
    auto r = parse_peer_list("good:1,bad:99999");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("bad:99999"), std::string::npos) << r.error().message;
}

TEST(Discovery, DnsNameIsReResolvedEachTime) {
    FakeResolver resolver;
    auto d = make_discovery("dns:assistd-peers.default.svc:7001", resolver);
    ASSERT_TRUE(d.ok()) << d.error().message;
    resolver.ips = {"10.1.0.7", "10.1.0.3"};
    auto first = (*d)->peers();
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(*first, (std::vector<std::string>{"10.1.0.3:7001", "10.1.0.7:7001"}));
    resolver.ips = {"10.1.0.9"};
    EXPECT_EQ((*d)->peers().value(), (std::vector<std::string>{"10.1.0.9:7001"}));
    EXPECT_EQ(resolver.calls, 2);
    resolver.fail = true;
    auto failed = (*d)->peers();
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.error().message.find("peer discovery"), std::string::npos);

    for (const char* bad : {"dns:", "dns:name", "dns:name:0", "dns:a:1,b:2"}) {
        auto r = make_discovery(bad, resolver);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_NE(r.error().message.find("dns:NAME:PORT"), std::string::npos) << r.error().message;
    }
    auto fixed = make_discovery("h1:1,h2:2", resolver);
    ASSERT_TRUE(fixed.ok());
    EXPECT_EQ((*fixed)->peers().value().size(), 2u);
}

TEST(Discovery, SystemResolverFindsLocalhostAndNamesWhatItCannotFind) {
    SystemResolver resolver;
    auto local = resolver.resolve("localhost");
    ASSERT_TRUE(local.ok()) << local.error().message;
    EXPECT_FALSE(local->empty());
    auto missing = resolver.resolve("no-such-host.invalid");
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find("no-such-host.invalid"), std::string::npos);
}

TEST(Membership, HealthFollowsWhatIsHeard) {
    Membership m(1, "self:1", 1000);
    EXPECT_TRUE(m.set_discovered({"self:1", "a:1", "b:1"}) == false)
        << "no ids known yet: placement unchanged";
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1}));
    EXPECT_EQ(m.discovered_peer_count(), 2u) << "peers count before their ids are known";
    EXPECT_EQ(m.peer_addresses(), (std::vector<std::string>{"a:1", "b:1"}));

    bool changed = false;
    EXPECT_TRUE(m.heard("a:1", 20, 0, changed)) << "first contact";
    EXPECT_TRUE(changed);
    EXPECT_FALSE(m.heard("a:1", 20, 100, changed)) << "already live";
    EXPECT_FALSE(changed);
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20}));
    EXPECT_TRUE(m.is_live(20));
    EXPECT_EQ(m.health(30), PeerHealth::kUnknown);

    EXPECT_TRUE(m.update_health(1000).empty());
    EXPECT_EQ(m.update_health(1101), (std::vector<NodeId>{20}));
    EXPECT_EQ(m.health(20), PeerHealth::kSuspect);
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20}))
        << "a suspect peer keeps its sessions: no reshuffle";
    EXPECT_TRUE(m.heard("a:1", 20, 1200, changed)) << "a reconnect";

    // The node restarts elsewhere (a new pod IP): the newest address wins.
    m.set_discovered({"self:1", "a2:1", "b:1"});
    m.heard("a2:1", 20, 1300, changed);
    EXPECT_EQ(m.address_of(20).value(), "a2:1");
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20}));

    // A node the DNS does not list (yet) is answered but not placed.
    m.heard("c:1", 40, 1300, changed);
    EXPECT_FALSE(changed);
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20}));
    auto hb = m.peer_addresses();
    EXPECT_NE(std::find(hb.begin(), hb.end(), "c:1"), hb.end());

    m.set_leaving(true);
    EXPECT_EQ(m.members(), (std::vector<NodeId>{20}));
}

TEST(Membership, ADepartedPeerLeavesPlacementAtOnceAndComesBackWithItsNextLife) {
    Membership m(1, "self:1", 1000);
    m.set_discovered({"self:1", "a:1", "b:1"});
    bool changed = false;
    m.heard("a:1", 20, 0, changed, 4);  // a heartbeat of life 4
    m.heard("b:1", 30, 0, changed, 1);
    ASSERT_EQ(m.members(), (std::vector<NodeId>{1, 20, 30}));

    EXPECT_FALSE(m.depart(20, 3)) << "a leave of an older life than one heard is stale";
    EXPECT_FALSE(m.departed(20));
    EXPECT_TRUE(m.depart(20, 4)) << "placement changes with no wait for suspicion";
    EXPECT_TRUE(m.departed(20));
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 30}));
    EXPECT_EQ(m.health(20), PeerHealth::kDeparted);
    EXPECT_FALSE(m.is_live(20));
    EXPECT_STREQ(peer_health_name(PeerHealth::kDeparted), "departed");
    for (const auto& p : m.peers())
        EXPECT_EQ(p.health, p.node_id == 20 ? PeerHealth::kDeparted : PeerHealth::kLive);

    // Its last frames and heartbeats of the same life do not bring it back.
    EXPECT_FALSE(m.heard("a:1", 20, 100, changed, 4));
    EXPECT_FALSE(changed);
    EXPECT_FALSE(m.heard("a:1", 20, 110, changed, 0));
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 30}));
    // Suspicion does not apply to it, and discovery keeping its address does not re-add it.
    m.update_health(5000);
    EXPECT_EQ(m.health(20), PeerHealth::kDeparted);
    m.set_discovered({"self:1", "a:1", "b:1"});
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 30}));

    // Restarted (life 5): its first heartbeat is a reconnect and a member again.
    EXPECT_TRUE(m.heard("a:1", 20, 6000, changed, 5));
    EXPECT_TRUE(changed);
    EXPECT_FALSE(m.departed(20));
    EXPECT_TRUE(m.is_live(20));
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20, 30}));
    EXPECT_FALSE(m.depart(20, 4)) << "the old life's leave, delivered late, is ignored";
    EXPECT_EQ(m.members(), (std::vector<NodeId>{1, 20, 30}));
    EXPECT_FALSE(m.depart(1, 9)) << "never this node";
}

TEST(Membership, OwnFramesAndAddressAreIgnored) {
    Membership m(1, "self:1", 1000);
    bool changed = true;
    EXPECT_FALSE(m.heard("self:1", 1, 0, changed));
    EXPECT_FALSE(changed);
    EXPECT_TRUE(m.peers().empty());
}

TEST(Membership, AnAddressThatTurnsOutToBeThisNodeIsNoPeer) {
    // The DNS lists our pod IP while we call ourselves by another name: our
    // own heartbeat comes back through it. Counting it as a peer would make
    // writes wait for acknowledgements from ourselves.
    Membership m(1, "me.local:7001", 1000);
    m.set_discovered({"10.0.0.1:7001", "10.0.0.2:7001"});
    EXPECT_EQ(m.discovered_peer_count(), 2u);
    bool changed = false;
    EXPECT_FALSE(m.heard("10.0.0.1:7001", 1, 0, changed));
    EXPECT_EQ(m.discovered_peer_count(), 1u);
    m.set_discovered({"10.0.0.1:7001", "10.0.0.2:7001"});  // the next resolution lists it again
    EXPECT_EQ(m.discovered_peer_count(), 1u);
    EXPECT_EQ(m.peer_addresses(), (std::vector<std::string>{"10.0.0.2:7001"}));
}

}  // namespace
}  // namespace assistd::cluster
