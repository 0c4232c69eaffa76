// The deterministic fleet simulation: many seeds, each a whole fleet with
// faults, must keep every acknowledged write and converge once healed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>

#include "fleet_sim.h"

namespace assistd::cluster::sim {
namespace {

// ASSISTD_SIM_SEED=<n> runs that one seed only (the replay of a failure).
std::vector<uint64_t> seeds(uint64_t first, int count) {
    std::vector<uint64_t> out;
    if (const char* one = std::getenv("ASSISTD_SIM_SEED")) {
        out.push_back(std::strtoull(one, nullptr, 10));
        return out;
    }
    for (int i = 0; i < count; ++i) out.push_back(first + static_cast<uint64_t>(i));
    return out;
}

void run_seeds(FleetSimConfig base, uint64_t first, int count, const char* name) {
    const auto start = std::chrono::steady_clock::now();
    int acknowledged = 0;
    int64_t worst_convergence = 0;
    for (uint64_t seed : seeds(first, count)) {
        FleetSimConfig c = base;
        c.seed = seed;
        const auto r = run_fleet_simulation(c);
        ASSERT_TRUE(r.ok) << "seed " << seed << " failed: " << r.failure << "\n" << replay_hint(seed, name);
        acknowledged += r.acknowledged;
        worst_convergence = std::max(worst_convergence, r.converged_after_ms);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: %zu seeds, %d acknowledged writes checked, slowest convergence %lld simulated ms, %.2f s\n", name,
                seeds(first, count).size(), acknowledged, static_cast<long long>(worst_convergence), secs);
    EXPECT_GT(acknowledged, 0) << "the workload acknowledged nothing: the simulation checked nothing";
}

TEST(FleetSimulation, ReliableNetworkConverges) {
    FleetSimConfig c;
    c.drop = 0;
    c.duplicate = 0;
    c.crashes = c.partitions = c.membership_changes = c.disk_loss = false;
    run_seeds(c, 1, 5, "ReliableNetworkConverges");
}

TEST(FleetSimulation, FaultsAcrossManySeeds) {
    FleetSimConfig c;
    c.operations = 120;
    c.workload_ms = 1500;
    run_seeds(c, 1000, 200, "FaultsAcrossManySeeds");
}

TEST(FleetSimulation, TwoNodesAllSessionsEverywhere) {
    FleetSimConfig c;
    c.nodes = 2;
    c.membership_changes = false;
    run_seeds(c, 5000, 20, "TwoNodesAllSessionsEverywhere");
}

}  // namespace
}  // namespace assistd::cluster::sim
