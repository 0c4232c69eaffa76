#pragma once
// Per-key rate limits as token buckets: requests per minute and tokens
// (prompt + completion) per minute. A bucket holds up to one minute's
// allowance and refills continuously; a request is admitted when both
// buckets can pay for it. Completion tokens are charged when they are known
// and may push the token bucket into debt, which later requests wait out.
// Time comes from the injected Clock, so tests drive it.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "serve/auth.h"
#include "serve/http_server.h"

namespace assistd::serve {

class TokenBucket {
public:
    // per_minute > 0: the capacity, refilled at per_minute / 60 each second; starts full.
    TokenBucket(double per_minute, int64_t now_ns);

    double capacity() const { return capacity_; }
    // The level now (negative while in debt).
    double level(int64_t now_ns);
    // Nanoseconds until `amount` can be taken (0: now). amount must be <= capacity().
    int64_t wait_ns(double amount, int64_t now_ns);
    // Nanoseconds until the bucket is full again.
    int64_t ns_until_full(int64_t now_ns);
    // Takes `amount` unconditionally (the level may go negative).
    void take(double amount, int64_t now_ns);

private:
    void refill(int64_t now_ns);
    double capacity_;
    double per_ns_;
    double level_;
    int64_t last_ns_;
};

// What one key's limits look like now, for the x-ratelimit-* headers.
struct RateLimitSnapshot {
    bool requests_limited = false, tokens_limited = false;
    double limit_requests = 0, remaining_requests = 0;
    int64_t reset_requests_ns = 0;
    double limit_tokens = 0, remaining_tokens = 0;
    int64_t reset_tokens_ns = 0;
};

struct RateDecision {
    bool admitted = true;
    bool too_large = false;   // the prompt alone exceeds tokens-per-minute: waiting cannot help
    std::string limit;        // what refused: "requests" or "tokens"
    int retry_after_s = 0;    // >= 1 when refused and waiting helps
    RateLimitSnapshot state;  // after the decision
};

class RateLimiter {
public:
    // keys must outlive the limiter; keys without limits cost nothing.
    RateLimiter(const ApiKeyTable& keys, Clock& clock);

    // One request with `prompt_tokens`: both buckets pay, or neither does.
    RateDecision admit(size_t key_index, size_t prompt_tokens);
    // Completion tokens, once known.
    void charge_tokens(size_t key_index, size_t tokens);
    RateLimitSnapshot snapshot(size_t key_index);

private:
    struct KeyState {
        std::optional<TokenBucket> requests, tokens;  // absent: no limit
    };
    RateLimitSnapshot snapshot_locked(KeyState& s, int64_t now);

    Clock& clock_;
    std::mutex mu_;  // one lock per request (not per token); contention is negligible
    std::vector<KeyState> states_;
};

// "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
// "x-ratelimit-reset-requests" and the -tokens variants, as OpenAI sends them
// (resets as durations like "6m0s", "1.5s", "20ms"); only for limits that are set.
HttpHeaders rate_limit_headers(const RateLimitSnapshot& s);
// A duration the way OpenAI's reset headers write it.
std::string reset_duration_text(int64_t ns);

}  // namespace assistd::serve
