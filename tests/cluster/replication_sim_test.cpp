// The deterministic fleet simulation: many seeds, each a whole fleet with
// faults, must keep every acknowledged write and converge once healed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "fleet_sim.h"
#include "sim_seeds.h"

namespace assistd::cluster::sim {
namespace {

TEST(FleetSimulation, ReliableNetworkConverges) {
    FleetSimConfig c;
    c.drop = 0;
    c.duplicate = 0;
    c.crashes = c.partitions = c.membership_changes = c.disk_loss = false;
    run_seeds(c, 1, 5, "ReliableNetworkConverges");
}

// 200 seeds in four tests, so ctest runs them side by side.
FleetSimConfig faulty() {
    FleetSimConfig c;
    c.operations = 120;
    c.workload_ms = 1500;
    return c;
}
TEST(FleetSimulation, FaultsSeeds1000To1049) {
    run_seeds(faulty(), 1000, 50, "FaultsSeeds1000To1049", true);
}
TEST(FleetSimulation, FaultsSeeds1050To1099) {
    run_seeds(faulty(), 1050, 50, "FaultsSeeds1050To1099", true);
}
TEST(FleetSimulation, FaultsSeeds1100To1149) {
    run_seeds(faulty(), 1100, 50, "FaultsSeeds1100To1149", true);
}
TEST(FleetSimulation, FaultsSeeds1150To1199) {
    run_seeds(faulty(), 1150, 50, "FaultsSeeds1150To1199", true);
}

// Tenants acme (on the cut-off node) and globex (on the other side) both
// create session "shared" during a partition: once healed, two sessions.
TEST(FleetSimulation, TwoTenantsCreatingOneIdAcrossAPartitionKeepTwoSessions) {
    for (uint64_t seed : seeds(7000, 10)) {
        for (int nodes : {2, 4}) {
            FleetSimConfig c;
            c.seed = seed;
            c.nodes = nodes;
            c.replication_factor = std::min(nodes, 3);
            const auto r = run_tenants_across_partition_simulation(c);
            ASSERT_TRUE(r.ok) << nodes << " nodes, seed " << seed << ": " << r.failure << "\n"
                              << replay_hint(seed, "TwoTenantsCreatingOneIdAcrossAPartitionKeepTwoSessions");
            EXPECT_EQ(r.sessions_checked, 2);
        }
    }
}

TEST(FleetSimulation, TwoNodesAllSessionsEverywhere) {
    FleetSimConfig c;
    c.nodes = 2;
    c.membership_changes = false;
    run_seeds(c, 5000, 20, "TwoNodesAllSessionsEverywhere");
}

}  // namespace
}  // namespace assistd::cluster::sim

namespace assistd::cluster::sim {
namespace {

// A seed is a replay: the same run, frame for frame, every time.
TEST(FleetSimulation, OneSeedReplaysTheSameRun) {
    FleetSimConfig c;
    c.seed = 1234;
    c.operations = 120;
    c.workload_ms = 1500;
    const auto a = run_fleet_simulation(c);
    const auto b = run_fleet_simulation(c);
    ASSERT_TRUE(a.ok) << a.failure;
    EXPECT_EQ(a.frames, b.frames);
    EXPECT_EQ(a.acknowledged, b.acknowledged);
    EXPECT_EQ(a.converged_after_ms, b.converged_after_ms);
    EXPECT_EQ(a.repairs, b.repairs);
    EXPECT_EQ(a.resent, b.resent);
    c.seed = 1235;
    EXPECT_NE(run_fleet_simulation(c).frames, a.frames) << "another seed, another run";
}

}  // namespace
}  // namespace assistd::cluster::sim
