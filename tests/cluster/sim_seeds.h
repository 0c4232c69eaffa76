#pragma once
// Runs a fleet simulation over a range of seeds; the first failure stops the
// test with its seed and the command that replays it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fleet_sim.h"

namespace assistd::cluster::sim {

// ASSISTD_SIM_SEED=<n> runs that one seed only (the replay of a failure).
inline std::vector<uint64_t> seeds(uint64_t first, int count) {
    std::vector<uint64_t> out;
    if (const char* one = std::getenv("ASSISTD_SIM_SEED")) {
        out.push_back(std::strtoull(one, nullptr, 10));
        return out;
    }
    for (int i = 0; i < count; ++i) out.push_back(first + static_cast<uint64_t>(i));
    return out;
}

inline void run_seeds(FleetSimConfig base, uint64_t first, int count, const char* name,
                      bool expect_every_path = false) {
    const auto start = std::chrono::steady_clock::now();
    int acknowledged = 0;
    int64_t worst_convergence = 0;
    uint64_t repairs = 0, handoffs = 0, resent = 0, fetches = 0, departures = 0;
    for (uint64_t seed : seeds(first, count)) {
        FleetSimConfig c = base;
        c.seed = seed;
        const auto r = run_fleet_simulation(c);
        ASSERT_TRUE(r.ok) << "seed " << seed << " failed: " << r.failure << "\n"
                          << replay_hint(seed, name);
        acknowledged += r.acknowledged;
        worst_convergence = std::max(worst_convergence, r.converged_after_ms);
        repairs += r.repairs;
        handoffs += r.handoffs;
        resent += r.resent;
        fetches += r.fetches;
        departures += r.departures;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf(
        "%s: %zu seeds, %d acknowledged writes checked, slowest convergence %lld simulated ms, "
        "%.2f s\n",
        name, seeds(first, count).size(), acknowledged, static_cast<long long>(worst_convergence),
        secs);
    std::printf(
        "%s: anti-entropy repairs %llu, hand-offs %llu, resent batches %llu, fetches %llu, "
        "departures noted %llu\n",
        name, static_cast<unsigned long long>(repairs), static_cast<unsigned long long>(handoffs),
        static_cast<unsigned long long>(resent), static_cast<unsigned long long>(fetches),
        static_cast<unsigned long long>(departures));
    if (expect_every_path && seeds(first, count).size() > 1) {
        EXPECT_GT(repairs, 0u)
            << "no run needed anti-entropy: the faults are too gentle to test it";
        EXPECT_GT(handoffs, 0u)
            << "no run handed a session off: membership changes are not exercised";
        EXPECT_GT(resent, 0u) << "no batch was ever resent: losses are not exercised";
        EXPECT_GT(fetches, 0u) << "no fetch-on-miss happened";
        EXPECT_GT(departures, 0u) << "no drained node announced its departure";
    }
    EXPECT_GT(acknowledged, 0)
        << "the workload acknowledged nothing: the simulation checked nothing";
}

}  // namespace assistd::cluster::sim
