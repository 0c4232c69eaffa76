// A key's rate limits hold across a three-node fleet (issue 14): a client
// spreads its requests over every node, and the fleet grants what one node
// would (each node charges its peers' use of the key as they report it;
// cluster/rate_usage_link.h), not three times as much. Skips without
// ../shared/models/stories260K.gguf.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "http_test_client.h"
#include "local_fleet.h"
#include "serve/auth.h"

namespace assistd::e2e {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::string kRequestsKey = "sk-fleet-requests";
const std::string kTokensKey = "sk-fleet-tokens";

std::string key_spec(const std::string& key, const std::string& limits) {
    std::string spec = "sha256=";
    spec += serve::sha256_hex(key);
    spec += ",tenant=acme,";
    spec += limits;
    return spec;
}

Reply completion(uint16_t port, const std::string& key, int max_tokens) {
    const std::string body =
        json{{"messages", json::array({{{"role", "user"}, {"content", "Tell me a story"}}})},
             {"max_tokens", max_tokens},
             {"temperature", 0}}
            .dump();
    return serve::test_support::exchange(port, "POST", "/v1/chat/completions", body,
                                         "Authorization: Bearer " + key + "\r\n");
}

class FleetRateLimitTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!model_available()) GTEST_SKIP() << "no " << model_path();
        fleet_ = std::make_unique<LocalFleet>(
            3, std::vector<std::string>{"--api-key", key_spec(kRequestsKey, "requests-per-minute=12"),
                                        "--api-key", key_spec(kTokensKey, "tokens-per-minute=600")});
        fleet_->start_all();
        ASSERT_TRUE(fleet_->wait_all_ready()) << fleet_->logs();
    }
    void TearDown() override {
        if (HasFailure() && fleet_) std::fprintf(stderr, "%s", fleet_->logs().c_str());
        fleet_.reset();
    }
    std::unique_ptr<LocalFleet> fleet_;
};

TEST_F(FleetRateLimitTest, RequestsPerMinuteHoldAcrossTheFleet) {
    // 36 requests, round robin over the three nodes: one node alone would
    // grant 12 (each node 12 if they did not share, 36 in all).
    const auto t0 = Clock::now();
    int granted = 0, refused = 0;
    for (int i = 0; i < 36; ++i) {
        const Reply r = completion(fleet_->port(i % 3), kRequestsKey, 1);
        if (r.status == 200) {
            ++granted;
        } else {
            ASSERT_EQ(r.status, 429) << r.body;
            EXPECT_EQ(r.json_body()["error"]["code"], "rate_limit_exceeded");
            EXPECT_EQ(r.json_body()["error"]["type"], "requests");
            EXPECT_TRUE(r.headers.count("retry-after"));
            ++refused;
        }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    // The bucket refills 12 per minute meanwhile; the issue allows one over per node.
    const int refilled = static_cast<int>(seconds * 12 / 60);
    std::printf("fleet rate limit: 12 requests per minute, 36 sent over 3 nodes in %.1f s: %d granted, %d refused\n",
                seconds, granted, refused);
    EXPECT_GE(granted, 12);
    EXPECT_LE(granted, 12 + refilled + 3);
}

TEST_F(FleetRateLimitTest, TokensPerMinuteHoldAcrossTheFleetWithReservationsSettled) {
    // Each request reserves its prompt and max_tokens (40) and gives back what
    // it did not generate; the tokens the fleet grants stay within one
    // bucket (600) and what it refilled, plus at most one request per node.
    const auto t0 = Clock::now();
    int granted = 0, refused = 0, used = 0, largest = 0;
    for (int i = 0; i < 60; ++i) {
        const Reply r = completion(fleet_->port(i % 3), kTokensKey, 40);
        if (r.status == 200) {
            ++granted;
            const int total = r.json_body()["usage"]["total_tokens"].get<int>();
            used += total;
            largest = std::max(largest, total);
        } else {
            ASSERT_EQ(r.status, 429) << r.body;
            EXPECT_EQ(r.json_body()["error"]["type"], "tokens");
            ++refused;
        }
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const int refilled = static_cast<int>(seconds * 600 / 60);
    std::printf("fleet rate limit: 600 tokens per minute, 60 requests over 3 nodes in %.1f s: %d granted using %d "
                "tokens, %d refused\n",
                seconds, granted, used, refused);
    EXPECT_GT(refused, 0);
    EXPECT_LE(used, 600 + refilled + 3 * largest);
    EXPECT_GE(used, 600 - 2 * largest) << "the fleet granted less than one bucket";
}

}  // namespace
}  // namespace assistd::e2e
