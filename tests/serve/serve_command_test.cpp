// `assistd serve` as a process: binds, answers, and on SIGTERM drains —
// a stream in flight completes, then the process exits 0.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "http_test_client.h"

namespace {

using assistd::serve::test_support::connect_loopback;

const std::string kStories = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

std::string http(uint16_t port, const std::string& method, const std::string& path, const std::string& body = "") {
    const int fd = connect_loopback(port);
    if (fd < 0) return "";
    const std::string req = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string raw;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) raw.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return raw;
}

TEST(ServeCommand, SigtermDrainsARunningStreamThenExitsZero) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    int err_pipe[2];
    ASSERT_EQ(::pipe(err_pipe), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::dup2(err_pipe[1], 2);
        ::close(err_pipe[0]);
        ::execl(ASSISTD_BINARY, ASSISTD_BINARY, "serve", "--model", kStories.c_str(), "--port", "0", "--threads", "2",
                "--precision", "fp32", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(err_pipe[1]);
    // The banner names the port.
    std::string log;
    uint16_t port = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (port == 0 && std::chrono::steady_clock::now() < until) {
        pollfd p{err_pipe[0], POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        char buf[512];
        const ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        log.append(buf, static_cast<size_t>(n));
        const size_t at = log.find("http://127.0.0.1:");
        if (at != std::string::npos && log.find(' ', at + 17) != std::string::npos)
            port = static_cast<uint16_t>(std::stoi(log.substr(at + 17)));
    }
    ASSERT_NE(port, 0) << log;
    // Ready once the weights are prepared ("warming up" until then: a few ms here).
    bool ready = false;
    for (int i = 0; i < 500 && !ready; ++i) {
        ready = http(port, "GET", "/readyz").find("200 OK") != std::string::npos;
        if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(ready);

    // A long stream; SIGTERM once its first frame arrives.
    const int fd = connect_loopback(port);
    ASSERT_GE(fd, 0);
    const std::string body =
        R"({"messages":[{"role":"user","content":"Tell me a story"}],"max_tokens":600,"temperature":0,"stream":true})";
    const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string stream;
    char buf[4096];
    while (stream.find("data: {") == std::string::npos) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(n, 0);
        stream.append(buf, static_cast<size_t>(n));
    }
    ::kill(pid, SIGTERM);
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) stream.append(buf, static_cast<size_t>(n));
    ::close(fd);
    EXPECT_NE(stream.find("data: [DONE]"), std::string::npos) << "the running stream must complete";
    EXPECT_NE(stream.find(R"("finish_reason":"length")"), std::string::npos);

    int status = 0;
    pid_t done = 0;
    const auto until_exit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until_exit)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (done == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        FAIL() << "assistd serve did not exit after SIGTERM";
    }
    ::close(err_pipe[0]);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Starts `assistd serve` with `args`; its pid and the stderr pipe. The caller reads the banner.
struct ServeProcess {
    pid_t pid = -1;
    int err = -1;
    std::string log;
    ~ServeProcess() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        if (err >= 0) ::close(err);
    }
    // Reads stderr until `marker` followed by a port and a space appeared (bounded); the port, or 0.
    uint16_t port_after(const std::string& marker) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        for (;;) {
            const size_t at = log.find(marker);
            if (at != std::string::npos && log.find(' ', at + marker.size()) != std::string::npos)
                return static_cast<uint16_t>(std::stoi(log.substr(at + marker.size())));
            if (std::chrono::steady_clock::now() >= until) return 0;
            pollfd p{err, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char buf[512];
            const ssize_t n = ::read(err, buf, sizeof buf);
            if (n <= 0) return 0;
            log.append(buf, static_cast<size_t>(n));
        }
    }
};

void start_serve(ServeProcess& p, std::vector<std::string> args) {
    int err_pipe[2];
    ASSERT_EQ(::pipe(err_pipe), 0);
    args.insert(args.begin(), {ASSISTD_BINARY, "serve"});
    p.pid = ::fork();
    ASSERT_GE(p.pid, 0);
    if (p.pid == 0) {
        ::dup2(err_pipe[1], 2);
        ::close(err_pipe[0]);
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(err_pipe[1]);
    p.err = err_pipe[0];
}

TEST(ServeCommand, MetricsOnTheirOwnAddressLeaveTheApiPortAndCanHideTenantNames) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    // The key "test-key-1" of tenant acme-secret.
    ServeProcess p;
    ASSERT_NO_FATAL_FAILURE(start_serve(
        p, {"--model", kStories, "--port", "0", "--threads", "1", "--metrics-listen", "127.0.0.1:0",
            "--metrics-tenant-labels", "false", "--api-key",
            "sha256=1255558df586ae279007fffa27ec17451d1507f7ac5442add9ffbc070f9f623b,tenant=acme-secret"}));
    const uint16_t api = p.port_after("ctx) on http://127.0.0.1:");
    const uint16_t metrics = p.port_after("metrics on http://127.0.0.1:");
    ASSERT_NE(api, 0) << p.log;
    ASSERT_NE(metrics, 0) << p.log;
    ASSERT_NE(api, metrics);
    // A request of the tenant, so its series exist.
    const std::string body = R"({"messages":[{"role":"user","content":"Hi"}],"max_tokens":2})";
    const int fd = connect_loopback(api);
    ASSERT_GE(fd, 0);
    const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            "Authorization: Bearer test-key-1\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string answer;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, static_cast<size_t>(n));
    ::close(fd);
    ASSERT_NE(answer.find("200 OK"), std::string::npos) << answer;

    EXPECT_NE(http(api, "GET", "/metrics").find("404"), std::string::npos) << "the API port must not serve /metrics";
    const std::string page = http(metrics, "GET", "/metrics");
    EXPECT_NE(page.find("200 OK"), std::string::npos) << page;
    EXPECT_NE(page.find(R"(assistd_tenant_requests_total{status="200",tenant="all"} 1)"), std::string::npos) << page;
    EXPECT_EQ(page.find("acme-secret"), std::string::npos) << "a tenant's name reached /metrics";
    EXPECT_NE(http(metrics, "GET", "/v1/models").find("404"), std::string::npos) << "the metrics address serves the API";
}

TEST(ServeCommand, ABadMetricsAddressIsAClearErrorWithStatus2) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    ServeProcess p;
    ASSERT_NO_FATAL_FAILURE(start_serve(p, {"--model", kStories, "--port", "0", "--metrics-listen", "nohostport"}));
    int status = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    pid_t done = 0;
    while ((done = ::waitpid(p.pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(done, p.pid);
    p.pid = -1;
    p.port_after("never");  // collect the log
    EXPECT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 2);
    EXPECT_NE(p.log.find("--metrics-listen 'nohostport' must be host:port"), std::string::npos) << p.log;
}

}  // namespace
