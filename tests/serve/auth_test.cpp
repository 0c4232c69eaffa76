// API keys and rate limits without a server: hashing, the key entry syntax,
// the Bearer header, lookup, and the token buckets on a ManualClock.
#include "serve/auth.h"

#include <gtest/gtest.h>

#include <tuple>

#include "serve/rate_limit.h"
#include "serve/sessions.h"
#include "state/tenant_sessions.h"

namespace assistd::serve {
namespace {

const std::string kAbcSha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

std::string entry(const std::string& key, const std::string& rest) {
    return "sha256=" + sha256_hex(key) + "," + rest;
}

ApiKeyTable table_of(const std::vector<std::string>& specs) {
    std::vector<ApiKeyConfig> keys;
    for (const auto& s : specs) {
        auto k = parse_api_key_spec(s);
        EXPECT_TRUE(k.ok()) << s << ": " << (k.ok() ? "" : k.error().message);
        if (k.ok()) keys.push_back(*k);
    }
    auto t = ApiKeyTable::create(std::move(keys));
    EXPECT_TRUE(t.ok());
    return t.ok() ? std::move(*t) : ApiKeyTable();
}

TEST(ApiKeyHash, Sha256MatchesKnownVectors) {
    EXPECT_EQ(sha256_hex("abc"), kAbcSha256);
    EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ApiKeyHash, GeneratedKeysAreDistinctAndWellFormed) {
    auto a = generate_api_key(), b = generate_api_key();
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_NE(*a, *b);
    ASSERT_EQ(a->size(), std::string("sk-assistd-").size() + 64);
    EXPECT_TRUE(a->starts_with("sk-assistd-"));
    EXPECT_EQ(a->find_first_not_of("0123456789abcdef", 11), std::string::npos) << *a;
}

TEST(ApiKeySpec, ParsesEveryField) {
    auto k = parse_api_key_spec("sha256=" + kAbcSha256 +
                                ", tenant=acme.eu-1 ,requests-per-minute=60,tokens-per-minute=1500.5,precision=bf16");
    ASSERT_TRUE(k.ok()) << k.error().message;
    EXPECT_EQ(k->hash, sha256("abc"));
    EXPECT_EQ(k->tenant, "acme.eu-1");
    EXPECT_EQ(k->requests_per_minute, 60);
    EXPECT_EQ(k->tokens_per_minute, 1500.5);
    ASSERT_TRUE(k->default_precision.has_value());
    EXPECT_EQ(*k->default_precision, engine::Precision::kBF16);

    auto upper = parse_api_key_spec("tenant=t,sha256=" + std::string("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    ASSERT_TRUE(upper.ok()) << upper.error().message;
    EXPECT_EQ(upper->hash, sha256("abc"));
    EXPECT_FALSE(upper->default_precision.has_value());
    EXPECT_EQ(upper->requests_per_minute, 0);
}

TEST(ApiKeySpec, BadEntriesSayWhatIsWrong) {
    const std::string h = "sha256=" + kAbcSha256;
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"tenant=a", "sha256 is missing"},
        {h, "tenant is missing"},
        {"sha256=abc,tenant=a", "64 hex digits"},
        {"sha256=" + std::string(63, 'a') + "g,tenant=a", "holds 'g'"},
        {h + ",tenant=a b", "may only hold"},
        {h + ",tenant=" + std::string(65, 't'), "1 to 64"},
        {h + ",tenant=a,precision=fp8", "precision must be fp32, fp16 or bf16"},
        {h + ",tenant=a,precision=native", "precision must be fp32, fp16 or bf16"},
        {h + ",tenant=a,requests-per-minute=-1", "requests-per-minute must be 0"},
        {h + ",tenant=a,requests-per-minute=0.5", "at least 1"},
        {h + ",tenant=a,tokens-per-minute=lots", "tokens-per-minute must be 0"},
        {h + ",tenant=a,rpm=5", "unknown field 'rpm'"},
        {h + ",tenant=a,key=sk-123", "never the key itself"},
        {h + ",tenant=a,oops", "is not name=value"},
    };
    for (const auto& [spec, want] : cases) {
        auto k = parse_api_key_spec(spec);
        ASSERT_FALSE(k.ok()) << spec;
        EXPECT_NE(k.error().message.find(want), std::string::npos) << spec << " -> " << k.error().message;
    }
}

// Session store keys are "<tenant>:<id>" and stay apart only while neither part can hold ':'.
TEST(ApiKeySpec, NoTenantNameOrSessionIdCanHoldTheStoreKeySeparator) {
    const std::string separator(1, state::kTenantKeySeparator);
    EXPECT_FALSE(parse_api_key_spec(entry("k", "tenant=acme" + separator + "x")).ok());
    EXPECT_FALSE(validate_session_id("chat" + separator + "1").ok());
    EXPECT_TRUE(parse_api_key_spec(entry("k", "tenant=acme.x")).ok());
    EXPECT_TRUE(validate_session_id("chat-1").ok());
}

TEST(ApiKeyTable, DuplicateHashesAreRefusedWithBothPositions) {
    std::vector<ApiKeyConfig> keys;
    for (const auto& s : {entry("k1", "tenant=a"), entry("k2", "tenant=b"), entry("k1", "tenant=c")})
        keys.push_back(*parse_api_key_spec(s));
    auto t = ApiKeyTable::create(keys);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().message.find("api keys 1 and 3"), std::string::npos) << t.error().message;
}

TEST(ApiKeyTable, FindsTheKeyByItsHashAndNothingElse) {
    const ApiKeyTable t = table_of({entry("key-a", "tenant=a"), entry("key-b", "tenant=b"), entry("key-a2", "tenant=a")});
    ASSERT_EQ(t.size(), 3u);
    EXPECT_EQ(t.find("key-a"), std::optional<size_t>(0));
    EXPECT_EQ(t.find("key-b"), std::optional<size_t>(1));
    EXPECT_EQ(t.find("key-a2"), std::optional<size_t>(2));
    EXPECT_EQ(t.find("key-c"), std::nullopt);
    EXPECT_EQ(t.find(""), std::nullopt);
    EXPECT_EQ(t.find(sha256_hex("key-a")), std::nullopt) << "the hash itself is not a key";
    EXPECT_EQ(t.tenants(), (std::vector<std::string>{"a", "b"}));
}

TEST(BearerToken, TakesOnlyWellFormedHeaders) {
    EXPECT_EQ(bearer_token("Bearer sk-1"), std::optional<std::string_view>("sk-1"));
    EXPECT_EQ(bearer_token("bearer   sk-1  "), std::optional<std::string_view>("sk-1"));
    EXPECT_EQ(bearer_token("BEARER sk-1"), std::optional<std::string_view>("sk-1"));
    for (const char* bad : {"", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "sk-1", "Bearer a b", "Bearersk-1"})
        EXPECT_EQ(bearer_token(bad), std::nullopt) << "'" << bad << "'";
}

TEST(AuthorizationFields, CountsEveryAuthorizationFieldInAnyCase) {
    using Headers = std::vector<std::pair<std::string, std::string>>;
    EXPECT_EQ(authorization_fields(Headers{{"Host", "x"}}).count, 0u);
    // The value views the headers: they must outlive it (a temporary did not, under ASan).
    const Headers one_field{{"Host", "x"}, {"authorization", "Bearer sk-1"}};
    const auto one = authorization_fields(one_field);
    EXPECT_EQ(one.count, 1u);
    EXPECT_EQ(one.value, "Bearer sk-1");
    const Headers two_fields{{"Authorization", "Bearer sk-1"}, {"AUTHORIZATION", "Bearer sk-2"}};
    const auto two = authorization_fields(two_fields);
    EXPECT_EQ(two.count, 2u);
    EXPECT_EQ(two.value, "") << "no value is offered when there are several";
    EXPECT_EQ(authorization_fields(Headers{{"Authorizations", "Bearer sk-1"}}).count, 0u);
}

TEST(TokenBucket, StartsFullRefillsPerMinuteAndCapsAtCapacity) {
    const int64_t s = 1'000'000'000;
    TokenBucket b(60, 0);  // one per second
    EXPECT_EQ(b.level(0), 60);
    b.take(60, 0);
    EXPECT_EQ(b.wait_ns(1, 0), s);
    EXPECT_EQ(b.wait_ns(30, 0), 30 * s);
    EXPECT_NEAR(b.level(s / 2), 0.5, 1e-9);
    EXPECT_NEAR(b.level(10 * s), 10, 1e-9);
    EXPECT_EQ(b.ns_until_full(10 * s), 50 * s);
    EXPECT_EQ(b.level(1000 * s), 60) << "capped";
    b.take(90, 1000 * s);  // into debt
    EXPECT_NEAR(b.level(1000 * s), -30, 1e-9);
    EXPECT_EQ(b.wait_ns(1, 1000 * s), 31 * s);
}

TEST(RateLimiter, RequestsPerMinuteRefusesThenRecoversOnTheClock) {
    ManualClock clock;
    const ApiKeyTable t = table_of({entry("a", "tenant=a,requests-per-minute=2"), entry("b", "tenant=b")});
    RateLimiter limiter(t, clock);
    RateDecision d = limiter.admit(0, 100);
    EXPECT_TRUE(d.admitted);
    EXPECT_EQ(d.state.remaining_requests, 1);
    EXPECT_TRUE(limiter.admit(0, 100).admitted);
    d = limiter.admit(0, 100);
    EXPECT_FALSE(d.admitted);
    EXPECT_FALSE(d.too_large);
    EXPECT_EQ(d.limit, "requests");
    EXPECT_EQ(d.retry_after_s, 30);  // 2 per minute: one every 30 s
    for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter.admit(1, 1000).admitted) << "key b has no limit";
    clock.advance_ms(29'000);
    d = limiter.admit(0, 1);
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.retry_after_s, 1);
    clock.advance_ms(1'000);
    EXPECT_TRUE(limiter.admit(0, 1).admitted);
    EXPECT_FALSE(limiter.admit(0, 1).admitted);
}

TEST(RateLimiter, TokensChargePromptAtAdmissionAndCompletionLater) {
    ManualClock clock;
    const ApiKeyTable t = table_of({entry("a", "tenant=a,tokens-per-minute=600")});  // 10 per second
    RateLimiter limiter(t, clock);
    EXPECT_FALSE(limiter.admit(0, 601).admitted);
    EXPECT_TRUE(limiter.admit(0, 601).too_large) << "no wait would admit it";
    EXPECT_EQ(limiter.admit(0, 601).retry_after_s, 0);
    RateDecision d = limiter.admit(0, 400);
    ASSERT_TRUE(d.admitted);
    EXPECT_EQ(d.state.remaining_tokens, 200);
    limiter.settle(0, 0, 300);  // the completion, nothing reserved: 100 in debt
    EXPECT_EQ(limiter.snapshot(0).remaining_tokens, 0);
    d = limiter.admit(0, 50);
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.limit, "tokens");
    EXPECT_EQ(d.retry_after_s, 15);  // from -100 to 50 at 10/s
    clock.advance_ms(15'000);
    EXPECT_TRUE(limiter.admit(0, 50).admitted);
}

TEST(RateLimiter, MaxTokensAreReservedUpFrontAndSettledAtTheEnd) {
    ManualClock clock;
    const ApiKeyTable t = table_of({entry("a", "tenant=a,tokens-per-minute=600")});
    RateLimiter limiter(t, clock);
    RateDecision d = limiter.admit(0, 100, 200);
    ASSERT_TRUE(d.admitted);
    EXPECT_EQ(d.reserved_tokens, 200u);
    EXPECT_EQ(d.state.remaining_tokens, 300) << "prompt and reservation taken at once";
    limiter.settle(0, 200, 50);  // generated 50 of the 200 reserved: 150 back
    EXPECT_EQ(limiter.snapshot(0).remaining_tokens, 450);
    // A reservation bigger than the bucket can hold beside the prompt is cut to fit.
    clock.advance_ms(60'000);
    d = limiter.admit(0, 500, 100'000);
    ASSERT_TRUE(d.admitted);
    EXPECT_EQ(d.reserved_tokens, 100u);
    EXPECT_EQ(d.state.remaining_tokens, 0);
    limiter.settle(0, 100, 130);  // 30 beyond the reservation: owed
    EXPECT_NEAR(limiter.snapshot(0).remaining_tokens, 0, 1e-9);
    d = limiter.admit(0, 1, 0);
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.retry_after_s, 4) << "from -30 to 1 at 10/s";
    // Giving back never fills past the capacity.
    clock.advance_ms(120'000);
    limiter.settle(0, 1000, 0);
    EXPECT_EQ(limiter.snapshot(0).remaining_tokens, 600);
}

TEST(RateLimiter, PeersChargesCountAndOwnChargesGoToTheSink) {
    ManualClock clock;
    const ApiKeyTable t = table_of({entry("a", "tenant=a,requests-per-minute=3,tokens-per-minute=600"),
                                    entry("b", "tenant=b")});
    RateLimiter limiter(t, clock);
    std::vector<std::tuple<Sha256Digest, double, double>> sent;
    limiter.set_usage_sink([&](const Sha256Digest& key, double r, double tk) { sent.emplace_back(key, r, tk); });
    ASSERT_TRUE(limiter.admit(0, 10, 20).admitted);
    limiter.settle(0, 20, 5);
    ASSERT_TRUE(limiter.admit(1, 10, 20).admitted);  // no limits: nothing to share
    ASSERT_EQ(sent.size(), 2u);
    EXPECT_EQ(std::get<0>(sent[0]), t.key(0).hash);
    EXPECT_EQ(std::get<1>(sent[0]), 1);
    EXPECT_EQ(std::get<2>(sent[0]), 30);
    EXPECT_EQ(std::get<1>(sent[1]), 0);
    EXPECT_EQ(std::get<2>(sent[1]), -15);
    // Two requests admitted by peers: the third here is over the limit.
    limiter.apply_peer_usage(t.key(0).hash, 1, 100);
    limiter.apply_peer_usage(t.key(0).hash, 1, 100);
    const RateDecision d = limiter.admit(0, 1);
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.limit, "requests");
    EXPECT_EQ(limiter.snapshot(0).remaining_tokens, 600 - 15 - 200);
    Sha256Digest unknown{};
    unknown[0] = 7;
    limiter.apply_peer_usage(unknown, 1, 1);  // a key this node lacks: ignored
    EXPECT_EQ(sent.size(), 2u) << "peers' charges are not sent on";
}

TEST(RateLimiter, BothLimitsPayOrNeither) {
    ManualClock clock;
    const ApiKeyTable t = table_of({entry("a", "tenant=a,requests-per-minute=10,tokens-per-minute=60")});
    RateLimiter limiter(t, clock);
    ASSERT_TRUE(limiter.admit(0, 60).admitted);
    const RateDecision d = limiter.admit(0, 30);
    EXPECT_FALSE(d.admitted);
    EXPECT_EQ(d.limit, "tokens");
    EXPECT_EQ(d.state.remaining_requests, 9) << "a refused request costs no request";
}

TEST(RateLimitHeaders, NamesAndDurationsLikeOpenAi) {
    EXPECT_EQ(reset_duration_text(0), "0ms");
    EXPECT_EQ(reset_duration_text(20'000'000), "20ms");
    EXPECT_EQ(reset_duration_text(1), "1ms") << "rounded up";
    EXPECT_EQ(reset_duration_text(1'000'000'000), "1s");
    EXPECT_EQ(reset_duration_text(1'500'000'000), "1.5s");
    EXPECT_EQ(reset_duration_text(360'000'000'000), "6m0s");
    EXPECT_EQ(reset_duration_text(61'250'000'000), "1m1.25s");

    RateLimitSnapshot s;
    EXPECT_TRUE(rate_limit_headers(s).empty()) << "no limits, no headers";
    s.requests_limited = s.tokens_limited = true;
    s.limit_requests = 60;
    s.remaining_requests = 59;
    s.reset_requests_ns = 1'000'000'000;
    s.limit_tokens = 1000;
    s.remaining_tokens = 990;
    s.reset_tokens_ns = 600'000'000;
    const HttpHeaders h = rate_limit_headers(s);
    const HttpHeaders want = {{"x-ratelimit-limit-requests", "60"},    {"x-ratelimit-remaining-requests", "59"},
                              {"x-ratelimit-reset-requests", "1s"},    {"x-ratelimit-limit-tokens", "1000"},
                              {"x-ratelimit-remaining-tokens", "990"}, {"x-ratelimit-reset-tokens", "600ms"}};
    EXPECT_EQ(h, want);
}

}  // namespace
}  // namespace assistd::serve
