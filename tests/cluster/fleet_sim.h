#pragma once
// A deterministic simulation of an assistd fleet: N nodes, each a real
// DurableSessionStore (RocksDB on an in-memory env, so a restart reopens the
// same files) and a Replicator, joined by a simulated network that delays,
// drops, duplicates and reorders frames and cuts partitions; nodes crash and
// restart, join, leave, and one may lose its disk for good. A random workload
// creates, appends to and deletes sessions through random nodes. One seed
// replays the same run exactly.
#include <cstdint>
#include <string>

namespace assistd::cluster::sim {

struct FleetSimConfig {
    uint64_t seed = 1;
    int nodes = 4;
    int replication_factor = 3;
    int sync_acks = 1;
    int sessions = 10;
    int operations = 250;
    int64_t workload_ms = 3000;  // simulated time the operations are spread over
    double drop = 0.05;          // per frame
    double duplicate = 0.03;
    int64_t max_delay_ms = 40;       // uniform 1..max: reordering comes with it
    bool crashes = true;             // crash + restart of random nodes
    bool partitions = true;          // one node cut off for a while
    bool membership_changes = true;  // a node joins; a node leaves (drain)
    bool disk_loss = true;           // one node loses its disk and comes back with a new id
    int64_t quiesce_limit_ms = 30000;
};

struct FleetSimResult {
    bool ok = false;
    std::string failure;   // what went wrong, with enough detail to debug
    int acknowledged = 0;  // writes acknowledged under sync_acks
    int sessions_checked = 0;
    int64_t converged_after_ms = 0;  // simulated time from healing to convergence
    uint64_t frames = 0;
    // Summed over the nodes' last lives: shows which paths a run went through.
    uint64_t repairs = 0, handoffs = 0, resent = 0, fetches = 0;
    uint64_t departures = 0;  // leaves the other nodes noted (announced by a drained node)
};

FleetSimResult run_fleet_simulation(const FleetSimConfig& config);

// Two tenants create one session id on the two sides of a partition (the
// first node cut off from the rest), each writing its own turns, with the
// config's lossy network; then the partition heals. Once the fleet has
// converged every node must hold the two as two sessions (one per tenant
// key), each with exactly its tenant's messages. Crashes, membership changes
// and the random workload are off.
FleetSimResult run_tenants_across_partition_simulation(const FleetSimConfig& config);

// "ASSISTD_SIM_SEED=<seed> <test binary> --gtest_filter=<test>": how to replay one seed.
std::string replay_hint(uint64_t seed, const char* test_name);

}  // namespace assistd::cluster::sim
