// `assistd serve`'s prefix-cache options as a process: the YAML key turns
// reuse off, the default has it on, and a bad value is a clear usage error.
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
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string kStories = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

struct Process {
    pid_t pid = -1;
    int err_fd = -1;
    std::string log;

    explicit Process(const std::vector<std::string>& args) {
        int p[2];
        EXPECT_EQ(::pipe(p), 0);
        pid = ::fork();
        if (pid == 0) {
            ::dup2(p[1], 2);
            ::close(p[0]);
            std::vector<char*> argv;
            argv.push_back(const_cast<char*>(ASSISTD_BINARY));
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execv(ASSISTD_BINARY, argv.data());
            ::_exit(127);
        }
        ::close(p[1]);
        err_fd = p[0];
    }
    ~Process() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        if (err_fd >= 0) ::close(err_fd);
    }
    // Reads stderr until `needle` appears (true) or the process ends or 30 s pass.
    bool read_until(const std::string& needle) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (log.find(needle) == std::string::npos && std::chrono::steady_clock::now() < until) {
            pollfd p{err_fd, POLLIN, 0};
            if (::poll(&p, 1, 100) <= 0) continue;
            char buf[512];
            const ssize_t n = ::read(err_fd, buf, sizeof buf);
            if (n <= 0) return false;
            log.append(buf, static_cast<size_t>(n));
        }
        return log.find(needle) != std::string::npos;
    }
    uint16_t port() {
        if (!read_until("prefix cache")) return 0;
        const size_t at = log.find("http://127.0.0.1:");
        return at == std::string::npos ? 0 : static_cast<uint16_t>(std::stoi(log.substr(at + 17)));
    }
    int wait_exit() {
        int status = 0;
        ::waitpid(pid, &status, 0);
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
};

nlohmann::json post_json(uint16_t port, const std::string& path, const std::string& body) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{30, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return nullptr;
    }
    const std::string req = "POST " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
    ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
    std::string raw;
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) raw.append(buf, static_cast<size_t>(n));
    ::close(fd);
    const size_t at = raw.find("\r\n\r\n");
    return at == std::string::npos ? nlohmann::json() : nlohmann::json::parse(raw.substr(at + 4), nullptr, false);
}

// cached_tokens of the second of two completions sharing a long prefix.
size_t second_cached_tokens(uint16_t port) {
    const std::string story = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
    size_t cached = 999;
    for (const char* end : {" One day", " The sun"}) {
        const auto j = post_json(port, "/v1/completions",
                                 nlohmann::json({{"prompt", story + end}, {"max_tokens", 2}, {"temperature", 0}}).dump());
        EXPECT_TRUE(j.is_object() && j.contains("usage")) << j.dump();
        if (!j.is_object() || !j.contains("usage")) return 999;
        cached = j["usage"]["prompt_tokens_details"]["cached_tokens"].get<size_t>();
    }
    return cached;
}

TEST(ServePrefixCache, OnByDefaultAndOffThroughTheConfigFile) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    {
        Process on({"serve", "--model", kStories, "--port", "0", "--threads", "2", "--precision", "fp32"});
        const uint16_t port = on.port();
        ASSERT_NE(port, 0) << on.log;
        EXPECT_NE(on.log.find("prefix cache up to"), std::string::npos) << on.log;
        EXPECT_GE(second_cached_tokens(port), 16u);
    }
    const std::string config = ::testing::TempDir() + "/serve_prefix_off.yaml";
    std::ofstream(config) << "prefix-cache: false\nport: 0\nthreads: 2\n";
    Process off({"serve", "--model", kStories, "--config", config});
    const uint16_t port = off.port();
    ASSERT_NE(port, 0) << off.log;
    EXPECT_NE(off.log.find("prefix cache off"), std::string::npos) << off.log;
    EXPECT_EQ(second_cached_tokens(port), 0u);
}

TEST(ServePrefixCache, BadValuesAreUsageErrors) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    Process flag({"serve", "--model", kStories, "--port", "0", "--prefix-cache", "maybe"});
    flag.read_until("\x01");  // to EOF: the process exits
    EXPECT_EQ(flag.wait_exit(), 2);
    EXPECT_NE(flag.log.find("prefix-cache"), std::string::npos) << flag.log;

    const std::string config = ::testing::TempDir() + "/serve_prefix_bad.yaml";
    std::ofstream(config) << "prefix-cache-blocks: lots\n";
    Process yaml({"serve", "--model", kStories, "--port", "0", "--config", config});
    yaml.read_until("\x01");
    EXPECT_EQ(yaml.wait_exit(), 2);
    EXPECT_NE(yaml.log.find("prefix-cache-blocks"), std::string::npos) << yaml.log;
}

}  // namespace
