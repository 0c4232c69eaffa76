#pragma once
// Chooses the precision a batch runs at from live latency and throughput
// figures. Pure: no clock, no threads; the caller passes the time in, so
// tests drive it with synthetic figures.
//
// Default rule (thresholds configurable):
//   p95 latency > 150 ms and throughput < 50 req/s   -> FP16
//   p95 latency < 80 ms  and throughput > 200 req/s  -> FP32
//   otherwise                                        -> BF16
// Hysteresis: a different choice must win `hold_evaluations` evaluations in a
// row, and at least `min_dwell_s` must have passed since the last switch.
#include <cstddef>
#include <cstdint>

#include "engine/engine.h"

namespace assistd::serve {

struct PrecisionPolicyConfig {
    double slow_latency_s = 0.150;       // above this (with low throughput): FP16
    double slow_throughput_rps = 50.0;
    double fast_latency_s = 0.080;       // below this (with high throughput): FP32
    double fast_throughput_rps = 200.0;
    int hold_evaluations = 3;
    double min_dwell_s = 5.0;
    engine::Precision initial = engine::Precision::kBF16;
};

struct PrecisionFigures {
    double p95_latency_s = 0;
    double throughput_rps = 0;
};

class PrecisionPolicy {
public:
    explicit PrecisionPolicy(const PrecisionPolicyConfig& config = {});

    // The precision the rule picks for these figures, without hysteresis.
    engine::Precision target(const PrecisionFigures& figures) const;
    // Feeds one evaluation at time now_s; returns true when the current
    // precision changed.
    bool evaluate(const PrecisionFigures& figures, double now_s);

    engine::Precision current() const { return current_; }
    uint64_t switches() const { return switches_; }
    const PrecisionPolicyConfig& config() const { return config_; }

private:
    PrecisionPolicyConfig config_;
    engine::Precision current_;
    engine::Precision candidate_;
    int candidate_streak_ = 0;
    double last_switch_s_;
    uint64_t switches_ = 0;
};

}  // namespace assistd::serve
