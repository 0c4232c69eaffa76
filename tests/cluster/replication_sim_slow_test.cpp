// More seeds and bigger fleets than the quick simulation test.
#include <gtest/gtest.h>

#include "fleet_sim.h"
#include "sim_seeds.h"

namespace assistd::cluster::sim {
namespace {

TEST(FleetSimulationSlow, FiveNodesManySessions) {
    FleetSimConfig c;
    c.nodes = 5;
    c.sessions = 30;
    c.operations = 400;
    c.workload_ms = 4000;
    run_seeds(c, 20000, 80, "FiveNodesManySessions", true);
}

TEST(FleetSimulationSlow, HarshNetwork) {
    FleetSimConfig c;
    c.drop = 0.25;
    c.duplicate = 0.15;
    c.max_delay_ms = 200;
    c.operations = 150;
    c.workload_ms = 2000;
    run_seeds(c, 30000, 150, "HarshNetwork");
}

TEST(FleetSimulationSlow, TwoSyncAcksOfFiveReplicas) {
    FleetSimConfig c;
    c.nodes = 6;
    c.replication_factor = 5;
    c.sync_acks = 2;
    c.operations = 200;
    c.workload_ms = 2500;
    run_seeds(c, 40000, 100, "TwoSyncAcksOfFiveReplicas");
}

}  // namespace
}  // namespace assistd::cluster::sim
