#include "serve/precision_policy.h"

#include <limits>

namespace assistd::serve {

using engine::Precision;

PrecisionPolicy::PrecisionPolicy(const PrecisionPolicyConfig& config)
    : config_(config),
      current_(config.initial),
      candidate_(config.initial),
      last_switch_s_(-std::numeric_limits<double>::infinity()) {}

Precision PrecisionPolicy::target(const PrecisionFigures& f) const {
    if (f.p95_latency_s > config_.slow_latency_s && f.throughput_rps < config_.slow_throughput_rps)
        return Precision::kFP16;
    if (f.p95_latency_s < config_.fast_latency_s && f.throughput_rps > config_.fast_throughput_rps)
        return Precision::kFP32;
    return Precision::kBF16;
}

bool PrecisionPolicy::evaluate(const PrecisionFigures& figures, double now_s) {
    const Precision want = target(figures);
    if (want == current_) {
        candidate_ = current_;
        candidate_streak_ = 0;
        return false;
    }
    if (want == candidate_) {
        ++candidate_streak_;
    } else {
        candidate_ = want;
        candidate_streak_ = 1;
    }
    if (candidate_streak_ < config_.hold_evaluations || now_s - last_switch_s_ < config_.min_dwell_s) return false;
    current_ = want;
    candidate_streak_ = 0;
    last_switch_s_ = now_s;
    ++switches_;
    return true;
}

}  // namespace assistd::serve
