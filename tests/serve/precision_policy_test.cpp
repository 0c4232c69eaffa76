#include "serve/precision_policy.h"

#include <gtest/gtest.h>

namespace assistd::serve {
namespace {

using engine::Precision;

const PrecisionFigures kSlow{.p95_latency_s = 0.200, .throughput_rps = 20};
const PrecisionFigures kFast{.p95_latency_s = 0.050, .throughput_rps = 300};
const PrecisionFigures kMiddle{.p95_latency_s = 0.100, .throughput_rps = 100};

TEST(PrecisionPolicy, RuleFromTheIssue) {
    PrecisionPolicy p;
    EXPECT_EQ(p.target(kSlow), Precision::kFP16);
    EXPECT_EQ(p.target(kFast), Precision::kFP32);
    EXPECT_EQ(p.target(kMiddle), Precision::kBF16);
    // Slow latency but high throughput is neither corner.
    EXPECT_EQ(p.target({.p95_latency_s = 0.2, .throughput_rps = 300}), Precision::kBF16);
    EXPECT_EQ(p.target({.p95_latency_s = 0.05, .throughput_rps = 10}), Precision::kBF16);
    // Bounds are strict.
    EXPECT_EQ(p.target({.p95_latency_s = 0.150, .throughput_rps = 20}), Precision::kBF16);
    EXPECT_EQ(p.target({.p95_latency_s = 0.080, .throughput_rps = 300}), Precision::kBF16);
}

TEST(PrecisionPolicy, ThresholdsAreConfigurable) {
    PrecisionPolicyConfig c;
    c.slow_latency_s = 0.010;
    c.slow_throughput_rps = 1000;
    PrecisionPolicy p(c);
    EXPECT_EQ(p.target(kMiddle), Precision::kFP16);
}

TEST(PrecisionPolicy, SwitchesOnlyAfterHoldEvaluations) {
    PrecisionPolicy p;  // hold 3, dwell 5 s, starts at BF16
    EXPECT_EQ(p.current(), Precision::kBF16);
    EXPECT_FALSE(p.evaluate(kSlow, 100));
    EXPECT_FALSE(p.evaluate(kSlow, 101));
    EXPECT_TRUE(p.evaluate(kSlow, 102));
    EXPECT_EQ(p.current(), Precision::kFP16);
    EXPECT_EQ(p.switches(), 1u);
}

TEST(PrecisionPolicy, AlternatingFiguresNeverFlap) {
    PrecisionPolicy p;
    for (int i = 0; i < 100; ++i) p.evaluate(i % 2 ? kSlow : kMiddle, 100 + i);
    EXPECT_EQ(p.current(), Precision::kBF16);
    EXPECT_EQ(p.switches(), 0u);
    // A streak interrupted by a different target starts over.
    EXPECT_FALSE(p.evaluate(kMiddle, 299));
    EXPECT_FALSE(p.evaluate(kSlow, 300));
    EXPECT_FALSE(p.evaluate(kSlow, 301));
    EXPECT_FALSE(p.evaluate(kFast, 302));
    EXPECT_FALSE(p.evaluate(kSlow, 303));
    EXPECT_EQ(p.current(), Precision::kBF16);
}

TEST(PrecisionPolicy, DwellTimeBetweenSwitches) {
    PrecisionPolicy p;
    for (int i = 0; i < 3; ++i) p.evaluate(kSlow, 10 + i);
    ASSERT_EQ(p.current(), Precision::kFP16);  // switched at t=12
    EXPECT_FALSE(p.evaluate(kFast, 13));
    EXPECT_FALSE(p.evaluate(kFast, 14));
    EXPECT_FALSE(p.evaluate(kFast, 15));  // streak complete but only 3 s since the switch
    EXPECT_FALSE(p.evaluate(kFast, 16));
    EXPECT_TRUE(p.evaluate(kFast, 17.5));
    EXPECT_EQ(p.current(), Precision::kFP32);
    EXPECT_EQ(p.switches(), 2u);
}

TEST(PrecisionPolicy, StayingPutResetsTheStreak) {
    PrecisionPolicy p;
    EXPECT_FALSE(p.evaluate(kSlow, 1));
    EXPECT_FALSE(p.evaluate(kSlow, 2));
    EXPECT_FALSE(p.evaluate(kMiddle, 3));  // back to the current choice
    EXPECT_FALSE(p.evaluate(kSlow, 4));
    EXPECT_FALSE(p.evaluate(kSlow, 5));
    EXPECT_EQ(p.current(), Precision::kBF16);
    EXPECT_TRUE(p.evaluate(kSlow, 6));
}

}  // namespace
}  // namespace assistd::serve
