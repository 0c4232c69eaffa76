// HttpServer alone, with a handler whose bodies the test finishes: a client
// waiting for a pending answer keeps its connection; one that leaves cancels it.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http_test_client.h"
#include "serve/http_server.h"

namespace assistd::serve {
namespace {

using namespace test_support;
using Clock = std::chrono::steady_clock;

// A body that stays pending until finish(); its waker is called as the real one is.
class PendingBody final : public AsyncBody {
public:
    void set_waker(std::function<void()> wake) override {
        std::lock_guard lk(mu_);
        wake_ = std::move(wake);
        if (ready_ && wake_) wake_();
    }
    void clear_waker() override {
        std::lock_guard lk(mu_);
        wake_ = nullptr;
    }
    bool poll(std::string& out) override {
        std::lock_guard lk(mu_);
        if (!ready_) return false;
        out += R"({"answer":"done"})";
        return true;
    }
    int status() const override { return 200; }
    void cancel() override { cancelled_.store(true); }

    void finish() {
        std::lock_guard lk(mu_);
        ready_ = true;
        if (wake_) wake_();
    }
    bool cancelled() const { return cancelled_.load(); }

private:
    std::mutex mu_;
    std::function<void()> wake_;
    bool ready_ = false;
    std::atomic<bool> cancelled_{false};
};

// An HttpServer whose every request gets a PendingBody, kept for the test.
struct PendingServer {
    explicit PendingServer(int io_threads) {
        HttpServerConfig hc;
        hc.port = 0;
        hc.io_threads = io_threads;
        auto s = HttpServer::start(hc, [this](const HttpRequest&) {
            auto body = std::make_shared<PendingBody>();
            {
                std::lock_guard lk(mu);
                bodies.push_back(body);
            }
            cv.notify_all();
            HttpResponse res;
            res.async = body;
            return res;
        });
        EXPECT_TRUE(s.ok());
        server = std::move(*s);
    }
    ~PendingServer() { server->stop(); }

    // The next body a request produced, in arrival order; null after `timeout`.
    std::shared_ptr<PendingBody> next_body(std::chrono::milliseconds timeout) {
        std::unique_lock lk(mu);
        if (!cv.wait_for(lk, timeout, [&] { return taken < bodies.size(); })) return nullptr;
        return bodies[taken++];
    }

    std::unique_ptr<HttpServer> server;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::shared_ptr<PendingBody>> bodies;
    size_t taken = 0;
};

// Reads until one whole response has arrived (or the peer closed or 10 s passed).
std::string read_one_reply(int fd, Reply& reply) {
    std::string raw;
    char buf[4096];
    timeval tv{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (parse_reply(raw, reply) == 0) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        raw.append(buf, static_cast<size_t>(n));
    }
    return raw;
}

TEST(HttpServer, ReadableSocketWithNoInBandBytesIsNotADisconnect) {
    // A client that sends TCP urgent data and then one more byte while its answer
    // is pending: the socket turns readable, yet the bytes before the urgent mark
    // (what FIONREAD counts) are none. The server used to take "readable with
    // nothing available" for a closed connection, the same wrong conclusion a
    // stale readiness event led it to under load (HttpApi.ConcurrentStreamsAllMatchEngine
    // losing a client now and then), and cut the client off without an answer.
    PendingServer s(1);
    const int fd = connect_loopback(s.server->port());
    ASSERT_GE(fd, 0);
    send_all(fd, request_text("POST", "/v1/pending", "{}", /*close=*/false));
    const auto body = s.next_body(std::chrono::seconds(10));
    ASSERT_NE(body, nullptr);
    // The watcher is armed right after the handler returns, on the I/O thread.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_EQ(::send(fd, "u", 1, MSG_OOB | MSG_NOSIGNAL), 1);
    ASSERT_EQ(::send(fd, "x", 1, MSG_NOSIGNAL), 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(body->cancelled()) << "the client is still connected";
    body->finish();
    Reply r;
    const std::string raw = read_one_reply(fd, r);
    ::close(fd);
    EXPECT_EQ(r.status, 200) << raw;
    EXPECT_EQ(r.body, R"({"answer":"done"})") << raw;
}

TEST(HttpServer, ClientThatClosesWhileItsAnswerIsPendingCancelsIt) {
    PendingServer s(1);
    const int fd = connect_loopback(s.server->port());
    ASSERT_GE(fd, 0);
    send_all(fd, request_text("POST", "/v1/pending", "{}"));
    const auto body = s.next_body(std::chrono::seconds(10));
    ASSERT_NE(body, nullptr);
    ::close(fd);
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (!body->cancelled() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_TRUE(body->cancelled());
    while (s.server->active_requests() != 0 && Clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_EQ(s.server->active_requests(), 0u);
}

TEST(HttpServer, AtItsConnectionCapItAcceptsTheNextClientOnlyWhenOneCloses) {
    HttpServerConfig hc;
    hc.port = 0;
    hc.io_threads = 2;
    hc.max_connections = 1;
    auto started = HttpServer::start(hc, [](const HttpRequest&) {
        HttpResponse res;
        res.body = R"({"ok":true})";
        return res;
    });
    ASSERT_TRUE(started.ok());
    const auto server = std::move(*started);
    // The first client holds the one connection (keep-alive) after its answer.
    const int first = connect_loopback(server->port());
    ASSERT_GE(first, 0);
    send_all(first, request_text("GET", "/one", "", /*close=*/false));
    Reply r1;
    read_one_reply(first, r1);
    EXPECT_EQ(r1.status, 200);
    // The second waits in the backlog: no answer while the first is open.
    const int second = connect_loopback(server->port());
    ASSERT_GE(second, 0);
    send_all(second, request_text("GET", "/two", ""));
    timeval short_wait{0, 300 * 1000};
    ::setsockopt(second, SOL_SOCKET, SO_RCVTIMEO, &short_wait, sizeof short_wait);
    char byte;
    EXPECT_LT(::recv(second, &byte, 1, MSG_PEEK), 0) << "answered beyond the connection cap";
    ::close(first);
    Reply r2;
    const std::string raw = read_one_reply(second, r2);
    ::close(second);
    EXPECT_EQ(r2.status, 200) << raw;
    EXPECT_EQ(r2.body, R"({"ok":true})") << raw;
    server->stop();
}

TEST(HttpServer, ConnectionsForAnOpenFileLimitKeepDescriptorsForTheRest) {
    EXPECT_EQ(connections_for_open_file_limit(64), 16u);
    EXPECT_EQ(connections_for_open_file_limit(1024), 1024u - 64u);
    EXPECT_EQ(connections_for_open_file_limit(1u << 20), (1u << 20) - (1u << 16));
    EXPECT_EQ(connections_for_open_file_limit(20), 1u) << "one connection even below what it keeps";
}

TEST(HttpServer, ManyConcurrentClientsWithPendingAnswersAllGetThem) {
    // Two I/O threads and clients that send as soon as they connect: one thread's
    // epoll_wait can report a request's bytes that the other has already read,
    // and that late readiness must not pass for a client that left.
    PendingServer s(2);
    constexpr int kClients = 8;
    constexpr int kRounds = 400;
    std::atomic<bool> stop{false};
    // Finishes each body a moment after its request arrived, as a short generation would.
    std::thread finisher([&] {
        while (!stop.load()) {
            const auto body = s.next_body(std::chrono::milliseconds(20));
            if (!body) continue;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            body->finish();
        }
    });
    std::atomic<int> failures{0}, answered{0};
    std::string first_failure;
    std::mutex failure_mu;
    const auto until = Clock::now() + std::chrono::seconds(60);
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c)
        clients.emplace_back([&] {
            for (int i = 0; i < kRounds && Clock::now() < until; ++i) {
                const int fd = connect_loopback(s.server->port());
                if (fd < 0) {
                    failures.fetch_add(1);
                    continue;
                }
                send_all(fd, request_text("POST", "/v1/pending", "{}"));
                const std::string raw = read_to_eof(fd);
                ::close(fd);
                Reply r;
                if (parse_reply(raw, r) > 0 && r.status == 200 && r.body == R"({"answer":"done"})") {
                    answered.fetch_add(1);
                } else if (failures.fetch_add(1) == 0) {
                    std::lock_guard lk(failure_mu);
                    first_failure = raw.empty() ? "(closed with no bytes)" : raw;
                }
            }
        });
    for (auto& t : clients) t.join();
    stop.store(true);
    finisher.join();
    EXPECT_EQ(failures.load(), 0) << "of " << failures.load() + answered.load() << " requests; the first: "
                                  << first_failure;
    EXPECT_GT(answered.load(), 0);
}

}  // namespace
}  // namespace assistd::serve

namespace assistd::serve {
namespace {

// A deferred response that waits (a session store waiting for a replica that
// stopped answering) must not hold the I/O thread: on a server with one I/O
// thread, probes and other requests are answered while it waits.
TEST(HttpServer, ADeferredResponseWaitsOffTheIoThreadWhileOthersAreAnswered) {
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    std::atomic<int> deferred_ran{0};
    HttpServerConfig hc;
    hc.port = 0;
    hc.io_threads = 1;
    auto s = HttpServer::start(hc, [&](const HttpRequest& r) {
        HttpResponse res;
        if (r.target == "/wait") {
            res.deferred = [&] {
                ++deferred_ran;
                std::unique_lock lk(mu);
                cv.wait_for(lk, std::chrono::seconds(20), [&] { return release; });
                HttpResponse done;
                done.body = R"({"waited":true})";
                return done;
            };
            return res;
        }
        res.body = R"({"status":"ok"})";
        return res;
    });
    ASSERT_TRUE(s.ok());
    std::thread waiter([&] {
        const Reply r = exchange((*s)->port(), "POST", "/wait", "{}");
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.body, R"({"waited":true})");
    });
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (deferred_ran.load() == 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_EQ(deferred_ran.load(), 1);
    // The one I/O thread is free: every probe is answered while /wait still waits.
    for (int i = 0; i < 20; ++i) {
        const Reply r = exchange((*s)->port(), "GET", "/healthz");
        EXPECT_EQ(r.status, 200) << i;
    }
    {
        std::lock_guard lk(mu);
        EXPECT_FALSE(release) << "the probes were answered while the deferred response waited";
        release = true;
    }
    cv.notify_all();
    waiter.join();
    (*s)->stop();
}

TEST(HttpServer, ADeferredResponseMayBeAStreamAndAThrowIsA500) {
    auto body = std::make_shared<PendingBody>();
    HttpServerConfig hc;
    hc.port = 0;
    hc.io_threads = 1;
    auto s = HttpServer::start(hc, [&](const HttpRequest& r) {
        HttpResponse res;
        if (r.target == "/throw") {
            res.deferred = []() -> HttpResponse { throw std::runtime_error("store failed"); };
        } else {
            res.deferred = [body] {
                HttpResponse pending;
                pending.async = body;
                return pending;
            };
        }
        return res;
    });
    ASSERT_TRUE(s.ok());
    const Reply thrown = exchange((*s)->port(), "POST", "/throw", "{}");
    EXPECT_EQ(thrown.status, 500);
    EXPECT_NE(thrown.body.find("internal error"), std::string::npos) << thrown.body;
    std::thread finisher([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        body->finish();
    });
    const Reply r = exchange((*s)->port(), "POST", "/pending", "{}");
    finisher.join();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"answer":"done"})");
    (*s)->stop();
}

}  // namespace
}  // namespace assistd::serve
