// Crash-test writer: appends numbered messages to one session with an fsync
// per write and prints each index once the append is acknowledged. The test
// kills it with SIGKILL at random moments.
//   state_crash_writer DB_PATH MAX_MESSAGES
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/clock.h"
#include "state/durable_session_store.h"

namespace {
std::string expected_content(size_t i) {
    // Long enough that a torn write would show as a short or garbled message.
    std::string s = "message " + std::to_string(i) + " ";
    while (s.size() < 300) s += static_cast<char>('a' + (s.size() + i) % 26);
    return s;
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: state_crash_writer DB_PATH MAX_MESSAGES\n");
        return 2;
    }
    assistd::state::DurableSessionStoreOptions opts;
    opts.path = argv[1];
    opts.replica_id = 7;
    opts.durability = assistd::state::DurableSessionStoreOptions::Durability::kSyncEachWrite;
    opts.snapshot_every = 16;  // snapshots and log truncation happen often, so crashes hit them too
    auto store = assistd::state::DurableSessionStore::open(opts, assistd::SystemClock::instance());
    if (!store.ok()) {
        std::fprintf(stderr, "open: %s\n", store.error().message.c_str());
        return 1;
    }
    auto& s = **store;
    if (!s.get("crash").ok()) {
        if (auto st = s.create("crash", "tenant", "crash test"); !st.ok()) return 1;
    }
    size_t next = s.get("crash").value().messages.size();
    const size_t max = std::strtoull(argv[2], nullptr, 10);
    std::printf("start %zu\n", next);
    std::fflush(stdout);
    for (; next < max; ++next) {
        auto m = s.append_message("crash", {"user", expected_content(next)});
        if (!m.ok()) {
            std::fprintf(stderr, "append: %s\n", m.error().message.c_str());
            return 1;
        }
        std::printf("%zu\n", next);
        std::fflush(stdout);
    }
    return 0;
}
