#include "serve/rate_limit.h"

#include <algorithm>
#include <cmath>

namespace assistd::serve {

namespace {
constexpr double kNsPerMinute = 60e9;
constexpr double kSlackTokens = 1e-6;
constexpr double kSlackNs = 1e-3;
}

TokenBucket::TokenBucket(double per_minute, int64_t now_ns)
    : capacity_(per_minute), per_ns_(per_minute / kNsPerMinute), level_(per_minute), last_ns_(now_ns) {}

void TokenBucket::refill(int64_t now_ns) {
    if (now_ns > last_ns_) {
        level_ = std::min(capacity_, level_ + static_cast<double>(now_ns - last_ns_) * per_ns_);
        last_ns_ = now_ns;
    }
}

double TokenBucket::level(int64_t now_ns) {
    refill(now_ns);
    return level_;
}

int64_t TokenBucket::wait_ns(double amount, int64_t now_ns) {
    refill(now_ns);
    // The slack absorbs rounding, so waiting exactly the time returned is always enough.
    if (level_ >= amount - kSlackTokens) return 0;
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil((amount - level_) / per_ns_ - kSlackNs)));
}

int64_t TokenBucket::ns_until_full(int64_t now_ns) {
    refill(now_ns);
    return std::max<int64_t>(0, static_cast<int64_t>(std::ceil((capacity_ - level_) / per_ns_ - kSlackNs)));
}

void TokenBucket::take(double amount, int64_t now_ns) {
    refill(now_ns);
    level_ = std::min(capacity_, level_ - amount);
}

RateLimiter::RateLimiter(const ApiKeyTable& keys, Clock& clock)
    : keys_(keys), clock_(clock), states_(keys.size()) {
    const int64_t now = clock_.now_mono_ns();
    for (size_t i = 0; i < keys.size(); ++i) {
        const ApiKeyConfig& k = keys.key(i);
        if (k.requests_per_minute > 0) states_[i].requests.emplace(k.requests_per_minute, now);
        if (k.tokens_per_minute > 0) states_[i].tokens.emplace(k.tokens_per_minute, now);
    }
}

RateDecision RateLimiter::admit(size_t key_index, size_t prompt_tokens, size_t max_completion_tokens) {
    RateDecision d;
    {
        std::lock_guard lock(mu_);
        KeyState& s = states_[key_index];
        const int64_t now = clock_.now_mono_ns();
        const double prompt = static_cast<double>(prompt_tokens);
        if (s.tokens && prompt > s.tokens->capacity()) {
            d.admitted = false;
            d.too_large = true;
            d.limit = "tokens";
        } else {
            // The reservation is bounded by what the bucket can ever hold beside the prompt.
            const double reserve = s.tokens ? std::min(static_cast<double>(max_completion_tokens),
                                                       std::floor(s.tokens->capacity() - prompt))
                                            : 0;
            const int64_t wait_requests = s.requests ? s.requests->wait_ns(1, now) : 0;
            const int64_t wait_tokens = s.tokens ? s.tokens->wait_ns(prompt + reserve, now) : 0;
            if (wait_requests > 0 || wait_tokens > 0) {
                d.admitted = false;
                d.limit = wait_requests >= wait_tokens ? "requests" : "tokens";
                const int64_t wait = std::max(wait_requests, wait_tokens);
                d.retry_after_s = static_cast<int>(std::max<int64_t>(1, (wait + 999'999'999) / 1'000'000'000));
            } else {
                if (s.requests) s.requests->take(1, now);
                if (s.tokens) s.tokens->take(prompt + reserve, now);
                d.reserved_tokens = static_cast<size_t>(reserve);
            }
        }
        d.state = snapshot_locked(s, now);
    }
    if (d.admitted)
        report(key_index, 1, static_cast<double>(prompt_tokens) + static_cast<double>(d.reserved_tokens));
    return d;
}

void RateLimiter::settle(size_t key_index, size_t reserved_tokens, size_t completion_tokens) {
    const double owed = static_cast<double>(completion_tokens) - static_cast<double>(reserved_tokens);
    if (owed == 0) return;
    {
        std::lock_guard lock(mu_);
        KeyState& s = states_[key_index];
        if (!s.tokens) return;
        s.tokens->take(owed, clock_.now_mono_ns());
    }
    report(key_index, 0, owed);
}

void RateLimiter::set_usage_sink(UsageSink sink) {
    std::lock_guard lock(mu_);
    sink_ = std::move(sink);
}

void RateLimiter::report(size_t key_index, double requests, double tokens) {
    UsageSink sink;
    {
        std::lock_guard lock(mu_);
        KeyState& s = states_[key_index];
        if (!s.requests && !s.tokens) return;  // a key without limits: nothing to share
        sink = sink_;
    }
    if (sink) sink(keys_.key(key_index).hash, requests, tokens);
}

void RateLimiter::apply_peer_usage(const Sha256Digest& key, double requests, double tokens) {
    const auto index = keys_.find_hash(key);
    if (!index) return;
    std::lock_guard lock(mu_);
    KeyState& s = states_[*index];
    const int64_t now = clock_.now_mono_ns();
    if (s.requests && requests != 0) s.requests->take(requests, now);
    if (s.tokens && tokens != 0) s.tokens->take(tokens, now);
}

RateLimitSnapshot RateLimiter::snapshot(size_t key_index) {
    std::lock_guard lock(mu_);
    return snapshot_locked(states_[key_index], clock_.now_mono_ns());
}

RateLimitSnapshot RateLimiter::snapshot_locked(KeyState& s, int64_t now) {
    RateLimitSnapshot r;
    if (s.requests) {
        r.requests_limited = true;
        r.limit_requests = s.requests->capacity();
        r.remaining_requests = std::max(0.0, std::floor(s.requests->level(now)));
        r.reset_requests_ns = s.requests->ns_until_full(now);
    }
    if (s.tokens) {
        r.tokens_limited = true;
        r.limit_tokens = s.tokens->capacity();
        r.remaining_tokens = std::max(0.0, std::floor(s.tokens->level(now)));
        r.reset_tokens_ns = s.tokens->ns_until_full(now);
    }
    return r;
}

std::string reset_duration_text(int64_t ns) {
    const int64_t ms = (std::max<int64_t>(0, ns) + 999'999) / 1'000'000;  // rounded up: never too early
    if (ms < 1000) return std::to_string(ms) + "ms";
    const int64_t minutes = ms / 60'000;
    const int64_t rest_ms = ms % 60'000;
    std::string seconds = std::to_string(rest_ms / 1000);
    if (rest_ms % 1000) {
        std::string frac = std::to_string(1000 + rest_ms % 1000).substr(1);  // three digits
        while (frac.back() == '0') frac.pop_back();
        seconds += "." + frac;
    }
    return (minutes > 0 ? std::to_string(minutes) + "m" : std::string()) + seconds + "s";
}

HttpHeaders rate_limit_headers(const RateLimitSnapshot& s) {
    HttpHeaders h;
    auto whole = [](double v) { return std::to_string(static_cast<int64_t>(std::floor(v))); };
    if (s.requests_limited) {
        h.emplace_back("x-ratelimit-limit-requests", whole(s.limit_requests));
        h.emplace_back("x-ratelimit-remaining-requests", whole(s.remaining_requests));
        h.emplace_back("x-ratelimit-reset-requests", reset_duration_text(s.reset_requests_ns));
    }
    if (s.tokens_limited) {
        h.emplace_back("x-ratelimit-limit-tokens", whole(s.limit_tokens));
        h.emplace_back("x-ratelimit-remaining-tokens", whole(s.remaining_tokens));
        h.emplace_back("x-ratelimit-reset-tokens", reset_duration_text(s.reset_tokens_ns));
    }
    return h;
}

}  // namespace assistd::serve
