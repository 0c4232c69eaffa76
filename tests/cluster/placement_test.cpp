#include "cluster/placement.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

namespace assistd::cluster {
namespace {

std::vector<NodeId> nodes(int n) {
    std::vector<NodeId> out;
    for (int i = 1; i <= n; ++i) out.push_back(static_cast<NodeId>(i) * 0x1000193 + 17);
    return out;
}

TEST(Placement, SameAnswerWhateverTheMemberOrder) {
    auto members = nodes(7);
    const auto a = place_replicas("session-42", members, 3);
    std::reverse(members.begin(), members.end());
    EXPECT_EQ(place_replicas("session-42", members, 3), a);
    ASSERT_EQ(a.size(), 3u);
    EXPECT_EQ(std::set<NodeId>(a.begin(), a.end()).size(), 3u)
        << "a replica set never names a node twice";
}

TEST(Placement, AllMembersWhenFewerThanTheFactor) {
    const auto members = nodes(2);
    auto r = place_replicas("x", members, 3);
    std::sort(r.begin(), r.end());
    EXPECT_EQ(r, members);
    EXPECT_TRUE(place_replicas("x", {}, 3).empty());
}

TEST(Placement, SpreadsSessionsEvenly) {
    const auto members = nodes(5);
    std::map<NodeId, int> load;
    const int sessions = 10000;
    for (int i = 0; i < sessions; ++i) {
        for (NodeId n : place_replicas(fmt::format("s{}", i), members, 3)) ++load[n];
    }
    const double expected = sessions * 3.0 / 5.0;
    for (const auto& [node, count] : load) {
        EXPECT_NEAR(count, expected, expected * 0.05) << "node " << node;
    }
}

TEST(Placement, AJoiningNodeMovesOnlyWhatItTakes) {
    auto members = nodes(5);
    const NodeId newcomer = 999999937;
    auto grown = members;
    grown.push_back(newcomer);
    int moved = 0;
    for (int i = 0; i < 5000; ++i) {
        const std::string id = fmt::format("s{}", i);
        auto before = place_replicas(id, members, 3);
        auto after = place_replicas(id, grown, 3);
        std::sort(before.begin(), before.end());
        std::sort(after.begin(), after.end());
        if (before == after) continue;
        ++moved;
        // The only change: the newcomer replaces exactly one old replica.
        ASSERT_TRUE(std::count(after.begin(), after.end(), newcomer) == 1) << id;
        std::vector<NodeId> common;
        std::set_intersection(before.begin(), before.end(), after.begin(), after.end(),
                              std::back_inserter(common));
        EXPECT_EQ(common.size(), 2u) << id;
    }
    // A sixth node takes about 3/6 of the sessions' replica slots' worth of sessions.
    EXPECT_NEAR(moved, 2500, 250);
}

TEST(Placement, PinnedSoEveryBuildPlacesAlike) {
    // Pinned values: nodes of different builds must agree on placement, so a
    // change here would move sessions around a fleet in the middle of an upgrade.
    EXPECT_EQ(stable_hash(""), 0xc3817c016ba4ff30ull);
    EXPECT_EQ(stable_hash("session-1"), 0xdf016efc657a36d2ull);
    EXPECT_EQ(place_replicas("session-1", {1, 2, 3, 4, 5}, 3), (std::vector<NodeId>{4, 3, 5}));
}

}  // namespace
}  // namespace assistd::cluster
