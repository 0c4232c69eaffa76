#include "common/result.h"

#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/cpu_features.h"

namespace assistd {
namespace {

Result<int> parse_positive(int v) {
    if (v <= 0) return make_error(ErrorCode::kInvalidArgument, "must be positive");
    return v;
}

TEST(Result, CarriesValueOrError) {
    auto good = parse_positive(3);
    ASSERT_TRUE(good.ok());
    EXPECT_EQ(*good, 3);
    auto bad = parse_positive(-1);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(bad.error().message, "must be positive");
    EXPECT_STREQ(error_code_name(bad.error().code), "invalid_argument");
}

TEST(Status, DefaultIsOk) {
    Status s;
    EXPECT_TRUE(s.ok());
    Status e = make_error(ErrorCode::kIo, "disk full");
    EXPECT_FALSE(e.ok());
    EXPECT_EQ(e.error().message, "disk full");
}

TEST(ManualClock, MovesOnlyWhenTold) {
    ManualClock c(1000);
    EXPECT_EQ(c.now_unix_ms(), 1000);
    EXPECT_EQ(c.now_unix_ms(), 1000);
    c.advance_ms(5);
    EXPECT_EQ(c.now_unix_ms(), 1005);
    EXPECT_EQ(c.now_mono_ns(), 5'000'000);
}

TEST(CpuFeatures, TiersAreConsistent) {
    const auto& f = cpu_features();
    if (f.has_avx512_tier()) {
        EXPECT_TRUE(f.has_avx2_tier());
    }
    EXPECT_FALSE(f.describe().empty());
}

}  // namespace
}  // namespace assistd
