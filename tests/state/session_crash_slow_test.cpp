// Crash test: a writer process appends messages with an fsync per write and is
// killed with SIGKILL at random moments, many times. After every restart each
// acknowledged message is present, in order, intact, and nothing half-written
// appears.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>

#include "common/clock.h"
#include "state/durable_session_store.h"

namespace assistd::state {
namespace {

std::string expected_content(size_t i) {
    std::string s = "message " + std::to_string(i) + " ";
    while (s.size() < 300) s += static_cast<char>('a' + (s.size() + i) % 26);
    return s;
}

// Runs the writer for about `ms` milliseconds after it started, then SIGKILLs it. Returns the
// number of messages it acknowledged in total (last printed index + 1), or -1
// if it acknowledged nothing this time.
long run_and_kill(const std::string& db, int ms) {
    int fds[2];
    if (pipe(fds) != 0) return -2;
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(ASSISTD_CRASH_WRITER, ASSISTD_CRASH_WRITER, db.c_str(), "1000000", static_cast<char*>(nullptr));
        _exit(127);
    }
    close(fds[1]);
    std::string out;
    // The window runs from the writer's first line ("start"), so a slow
    // start (a sanitizer build, a loaded machine) does not eat it.
    std::chrono::steady_clock::time_point deadline{};
    bool started = false;
    const auto hard_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
        const auto now = std::chrono::steady_clock::now();
        if ((started && now >= deadline) || now >= hard_deadline) break;
        pollfd p{fds[0], POLLIN, 0};
        if (poll(&p, 1, 1) > 0) {
            char buf[4096];
            const ssize_t n = read(fds[0], buf, sizeof buf);
            if (n <= 0) break;
            out.append(buf, static_cast<size_t>(n));
            if (!started && out.find('\n') != std::string::npos) {
                started = true;
                deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
            }
        }
    }
    kill(pid, SIGKILL);
    // Whatever was acknowledged before the kill is still in the pipe: read it all.
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    long last = -1;
    size_t pos = 0;
    while (pos < out.size()) {
        const size_t nl = out.find('\n', pos);
        if (nl == std::string::npos) break;  // a line cut by the kill was not acknowledged
        const std::string line = out.substr(pos, nl - pos);
        if (!line.empty() && line.rfind("start", 0) != 0) last = std::stol(line);
        pos = nl + 1;
    }
    return last + 1;
}

TEST(SessionCrash, AcknowledgedMessagesSurviveSigkill) {
    const auto dir = std::filesystem::temp_directory_path() / ("assistd_crash_" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    const uint64_t seed = std::random_device{}();
    std::mt19937_64 rng(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    long acknowledged = 0;
    constexpr int kRounds = 30;
    for (int round = 0; round < kRounds; ++round) {
        const long acked = run_and_kill(dir.string(), 5 + static_cast<int>(rng() % 60));
        ASSERT_GE(acked, -1) << "could not start the writer";
        acknowledged = std::max(acknowledged, acked);
        DurableSessionStoreOptions opts;
        opts.path = dir.string();
        opts.replica_id = 7;
        opts.durability = DurableSessionStoreOptions::Durability::kSyncEachWrite;
        ManualClock clock;
        auto store = DurableSessionStore::open(opts, clock);
        ASSERT_TRUE(store.ok()) << store.error().message;
        auto session = (*store)->get("crash");
        if (acknowledged == 0 && !session.ok()) continue;  // killed before the session was created
        ASSERT_TRUE(session.ok()) << "round " << round << ": " << session.error().message;
        const auto& msgs = session->messages;
        ASSERT_GE(static_cast<long>(msgs.size()), acknowledged) << "round " << round << ": acknowledged messages lost";
        for (size_t i = 0; i < msgs.size(); ++i) {
            ASSERT_EQ(msgs[i].content, expected_content(i)) << "round " << round << ": message " << i;
            ASSERT_EQ(msgs[i].role, "user");
        }
        acknowledged = static_cast<long>(msgs.size());
    }
    std::printf("%ld messages intact after %d SIGKILLs\n", acknowledged, kRounds);
    EXPECT_GT(acknowledged, 30) << "the writer barely ran; the test proved little";
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace assistd::state
