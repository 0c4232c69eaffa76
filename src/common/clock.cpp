#include "common/clock.h"

#include <chrono>

namespace assistd {

int64_t SystemClock::now_unix_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int64_t SystemClock::now_mono_ns() {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
}

SystemClock& SystemClock::instance() {
    static SystemClock clock;  // stateless: safe to share
    return clock;
}

}  // namespace assistd
