#pragma once
// Per-key rate limits as token buckets: requests per minute and tokens
// (prompt + completion) per minute. A bucket holds up to one minute's
// allowance and refills continuously; a request is admitted when both
// buckets can pay for it: one request, its prompt and the completion tokens
// it may generate (max_tokens, reserved up front as far as the bucket's size
// allows). At the end the request settles: unused reserved tokens go back,
// tokens beyond the reservation are owed (the bucket may go into debt, which
// later requests wait out). In a fleet every charge also goes to the peers
// (set_usage_sink) and theirs come here (apply_peer_usage), so each node's
// buckets show the whole fleet's use of a key (cluster/rate_usage_link.h).
// Time comes from the injected Clock, so tests drive it.
#include <cstddef>
#include <cstdint>
#include <functional>
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
    // Takes `amount` unconditionally (the level may go negative); a negative
    // amount gives back, up to the capacity.
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
    size_t reserved_tokens = 0;  // admitted: completion tokens reserved (settle() them)
    RateLimitSnapshot state;  // after the decision
};

class RateLimiter {
public:
    // keys must outlive the limiter; keys without limits cost nothing.
    RateLimiter(const ApiKeyTable& keys, Clock& clock);

    // One request with `prompt_tokens` that may generate up to
    // `max_completion_tokens`: the request bucket pays 1 and the token bucket
    // the prompt and the reservation (as much of max_completion_tokens as fits
    // beside the prompt in the bucket's capacity), or neither pays.
    RateDecision admit(size_t key_index, size_t prompt_tokens, size_t max_completion_tokens = 0);
    // The end of an admitted request: `completion_tokens` were generated
    // against `reserved_tokens` (RateDecision::reserved_tokens).
    void settle(size_t key_index, size_t reserved_tokens, size_t completion_tokens);
    RateLimitSnapshot snapshot(size_t key_index);

    // Where this node's charges go (a fleet's peers): the key's hash and what
    // was taken (tokens may be negative: given back). Set before traffic.
    using UsageSink = std::function<void(const Sha256Digest& key, double requests, double tokens)>;
    void set_usage_sink(UsageSink sink);
    // A peer's charges to the key with this hash (an unknown key is ignored:
    // the peer was configured with keys this node lacks).
    void apply_peer_usage(const Sha256Digest& key, double requests, double tokens);

private:
    struct KeyState {
        std::optional<TokenBucket> requests, tokens;  // absent: no limit
    };
    RateLimitSnapshot snapshot_locked(KeyState& s, int64_t now);

    void report(size_t key_index, double requests, double tokens);

    const ApiKeyTable& keys_;
    Clock& clock_;
    UsageSink sink_;
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
