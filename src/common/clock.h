#pragma once
// Time is injected, never read from a global: components take a Clock& so a
// test or a simulation can drive it.
#include <cstdint>

namespace assistd {

class Clock {
public:
    virtual ~Clock() = default;
    // Wall-clock time in milliseconds since the Unix epoch (for timestamps users see).
    virtual int64_t now_unix_ms() = 0;
    // Monotonic nanoseconds, for durations.
    virtual int64_t now_mono_ns() = 0;
};

class SystemClock final : public Clock {
public:
    int64_t now_unix_ms() override;
    int64_t now_mono_ns() override;
    static SystemClock& instance();
};

// A clock that only moves when told to: deterministic tests and simulations.
class ManualClock final : public Clock {
public:
    explicit ManualClock(int64_t start_unix_ms = 1'700'000'000'000) : unix_ms_(start_unix_ms) {}
    int64_t now_unix_ms() override { return unix_ms_; }
    int64_t now_mono_ns() override { return mono_ns_; }
    void advance_ms(int64_t ms) { unix_ms_ += ms; mono_ns_ += ms * 1'000'000; }

private:
    int64_t unix_ms_;
    int64_t mono_ns_ = 0;
};

}  // namespace assistd
