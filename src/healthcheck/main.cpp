// assistd-healthcheck: the health-check sidecar, and a one-shot probe.
//
//   assistd-healthcheck probe URL [--timeout-ms N]
//       One GET; exit 0 on a 2xx answer, 1 otherwise (Docker HEALTHCHECK, exec probes).
//   assistd-healthcheck watch [--target http://127.0.0.1:8080] [--listen 0.0.0.0:8081]
//                             [--interval-ms 2000] [--timeout-ms 5000] [--stale-after-ms 30000]
//                             [--deep] [--api-key-file FILE]
//       The sidecar. It checks assistd from inside the pod every interval:
//       /healthz, and with --deep a one-token completion, which proves the
//       scheduler thread and the engine still make progress (/healthz is
//       answered by the I/O threads and stays green when the model thread is
//       wedged). It serves GET /livez: 200 while the last good check is more
//       recent than --stale-after-ms, else 503 with the last failure; and
//       GET /status: the same as JSON, always 200 (the sidecar's own
//       liveness). The main container's liveness probe can point at /livez
//       (containers of a pod share the network namespace).
//
// Plain POSIX sockets and HTTP/1.1 with Connection: close: the image holds
// this one small binary and libstdc++.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Url {
    std::string host;
    std::string port;
    std::string path;
};

// http://host[:port][/path] only: the sidecar talks to its own pod.
std::optional<Url> parse_url(const std::string& text, std::string& error) {
    const std::string scheme = "http://";
    if (text.compare(0, scheme.size(), scheme) != 0) {
        error = "only http:// URLs are supported: '" + text + "'";
        return std::nullopt;
    }
    Url url;
    const std::string rest = text.substr(scheme.size());
    const size_t slash = rest.find('/');
    const std::string authority = rest.substr(0, slash);
    url.path = slash == std::string::npos ? "/" : rest.substr(slash);
    const size_t colon = authority.rfind(':');
    url.host = colon == std::string::npos ? authority : authority.substr(0, colon);
    url.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
    if (url.host.empty() || url.port.empty() || url.port.find_first_not_of("0123456789") != std::string::npos) {
        error = "bad URL '" + text + "': expected http://host[:port][/path]";
        return std::nullopt;
    }
    return url;
}

struct Response {
    int status = 0;  // 0: no answer
    std::string body;
    std::string error;
};

// Waits for fd to be ready for `events` until the deadline.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, static_cast<int>(left));
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return false;
    }
}

Response request(const Url& url, const std::string& method, const std::string& body,
                 const std::string& bearer, int timeout_ms) {
    Response out;
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
        out.error = "cannot resolve " + url.host + ": " + gai_strerror(rc);
        return out;
    }
    int fd = -1;
    for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
            ::close(fd);
            fd = -1;
            continue;
        }
        int so_error = 0;
        socklen_t len = sizeof so_error;
        if (!wait_fd(fd, POLLOUT, deadline) || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 ||
            so_error != 0) {
            out.error = so_error ? std::string("connect: ") + std::strerror(so_error) : "connect timed out";
            ::close(fd);
            fd = -1;
        }
    }
    ::freeaddrinfo(found);
    if (fd < 0) {
        if (out.error.empty()) out.error = "cannot connect to " + url.host + ":" + url.port;
        return out;
    }
    std::string req = method + " " + url.path + " HTTP/1.1\r\nHost: " + url.host + "\r\nConnection: close\r\n";
    if (!bearer.empty()) req += "Authorization: Bearer " + bearer + "\r\n";
    if (!body.empty()) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    for (size_t sent = 0; sent < req.size();) {
        if (!wait_fd(fd, POLLOUT, deadline)) {
            out.error = "timed out sending the request";
            ::close(fd);
            return out;
        }
        const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            out.error = std::string("send: ") + std::strerror(errno);
            ::close(fd);
            return out;
        }
        if (n > 0) sent += static_cast<size_t>(n);
    }
    std::string raw;
    char buf[4096];
    for (;;) {
        if (!wait_fd(fd, POLLIN, deadline)) {
            out.error = "timed out waiting for the answer";
            ::close(fd);
            return out;
        }
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            out.error = std::string("recv: ") + std::strerror(errno);
            ::close(fd);
            return out;
        }
        raw.append(buf, static_cast<size_t>(n));
        if (raw.size() > (1u << 20)) break;  // more than any health answer
    }
    ::close(fd);
    int status = 0;
    if (std::sscanf(raw.c_str(), "HTTP/1.%*d %d", &status) != 1) {
        out.error = "not an HTTP answer";
        return out;
    }
    out.status = status;
    const size_t head_end = raw.find("\r\n\r\n");
    if (head_end != std::string::npos) out.body = raw.substr(head_end + 4);
    return out;
}

void usage() {
    std::fprintf(stderr,
                 "usage: assistd-healthcheck probe URL [--timeout-ms N]\n"
                 "       assistd-healthcheck watch [--target URL] [--listen HOST:PORT] [--interval-ms N]\n"
                 "                                 [--timeout-ms N] [--stale-after-ms N] [--deep] [--api-key-file F]\n");
}

std::optional<long> parse_ms(const char* flag, const char* value) {
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (!end || *end != '\0' || v <= 0 || v > 3600 * 1000) {
        std::fprintf(stderr, "assistd-healthcheck: %s wants a positive number of milliseconds, got '%s'\n", flag,
                     value);
        return std::nullopt;
    }
    return v;
}

int cmd_probe(int argc, char** argv) {
    std::string target;
    long timeout_ms = 2000;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--timeout-ms" && i + 1 < argc) {
            auto v = parse_ms("--timeout-ms", argv[++i]);
            if (!v) return 2;
            timeout_ms = *v;
        } else if (target.empty() && a.rfind("--", 0) != 0) {
            target = a;
        } else {
            std::fprintf(stderr, "assistd-healthcheck probe: unexpected argument '%s'\n", a.c_str());
            usage();
            return 2;
        }
    }
    if (target.empty()) {
        usage();
        return 2;
    }
    std::string error;
    auto url = parse_url(target, error);
    if (!url) {
        std::fprintf(stderr, "assistd-healthcheck probe: %s\n", error.c_str());
        return 2;
    }
    const Response r = request(*url, "GET", "", "", static_cast<int>(timeout_ms));
    if (r.status >= 200 && r.status < 300) return 0;
    if (r.status)
        std::fprintf(stderr, "assistd-healthcheck: %s answered %d\n", target.c_str(), r.status);
    else
        std::fprintf(stderr, "assistd-healthcheck: %s: %s\n", target.c_str(), r.error.c_str());
    return 1;
}

struct WatchState {
    std::mutex mu;
    Clock::time_point last_good{};
    bool ever_good = false;
    std::string last_error = "no check has run yet";
    uint64_t checks = 0, failures = 0;
};

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out;
}

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

int cmd_watch(int argc, char** argv) {
    std::string target = "http://127.0.0.1:8080", listen = "0.0.0.0:8081", key_file;
    long interval_ms = 2000, timeout_ms = 5000, stale_ms = 30000;
    bool deep = false;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        auto need = [&](const char* flag) -> const char* {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "assistd-healthcheck watch: %s needs a value\n", flag);
                return nullptr;
            }
            return argv[++i];
        };
        const char* v = nullptr;
        std::optional<long> ms;
        if (a == "--target") {
            if (!(v = need("--target"))) return 2;
            target = v;
        } else if (a == "--listen") {
            if (!(v = need("--listen"))) return 2;
            listen = v;
        } else if (a == "--api-key-file") {
            if (!(v = need("--api-key-file"))) return 2;
            key_file = v;
        } else if (a == "--deep") {
            deep = true;
        } else if (a == "--interval-ms" || a == "--timeout-ms" || a == "--stale-after-ms") {
            if (!(v = need(a.c_str())) || !(ms = parse_ms(a.c_str(), v))) return 2;
            (a == "--interval-ms" ? interval_ms : a == "--timeout-ms" ? timeout_ms : stale_ms) = *ms;
        } else {
            std::fprintf(stderr, "assistd-healthcheck watch: unknown argument '%s'\n", a.c_str());
            usage();
            return 2;
        }
    }
    std::string error;
    auto base = parse_url(target, error);
    if (!base) {
        std::fprintf(stderr, "assistd-healthcheck watch: --target: %s\n", error.c_str());
        return 2;
    }
    std::string api_key;
    if (!key_file.empty()) {
        std::ifstream in(key_file);
        if (!in || !std::getline(in, api_key) || api_key.empty()) {
            std::fprintf(stderr, "assistd-healthcheck watch: cannot read an API key from %s\n", key_file.c_str());
            return 2;
        }
    }
    const size_t colon = listen.rfind(':');
    const std::string listen_host = colon == std::string::npos ? "0.0.0.0" : listen.substr(0, colon);
    const int listen_port = std::atoi(colon == std::string::npos ? listen.c_str() : listen.c_str() + colon + 1);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(listen_port));
    if (listen_port < 0 || listen_port > 65535 || ::inet_pton(AF_INET, listen_host.c_str(), &addr.sin_addr) != 1) {
        std::fprintf(stderr, "assistd-healthcheck watch: --listen wants IPv4:PORT, got '%s'\n", listen.c_str());
        return 2;
    }
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    ::setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(server, 64) != 0) {
        std::fprintf(stderr, "assistd-healthcheck watch: cannot listen on %s: %s\n", listen.c_str(),
                     std::strerror(errno));
        return 2;
    }
    struct sigaction sa{};
    sa.sa_handler = on_signal;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    socklen_t len = sizeof addr;
    ::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len);
    std::fprintf(stderr, "assistd-healthcheck: watching %s%s, serving /livez and /status on http://%s:%d\n",
                 target.c_str(), deep ? " (deep: one-token completions)" : "", listen_host.c_str(),
                 ntohs(addr.sin_port));
    std::fflush(stderr);

    WatchState state;
    std::thread checker([&] {
        Url health = *base, completion = *base;
        health.path = "/healthz";
        completion.path = "/v1/completions";
        while (!g_stop.load()) {
            const auto started = Clock::now();
            std::string failure;
            Response r = request(health, "GET", "", "", static_cast<int>(timeout_ms));
            if (r.status != 200) {
                failure = r.status ? "/healthz answered " + std::to_string(r.status) : "/healthz: " + r.error;
            } else if (deep) {
                r = request(completion, "POST", R"({"prompt":"ping","max_tokens":1,"temperature":0})", api_key,
                            static_cast<int>(timeout_ms));
                // 429/503 mean a busy or draining server that is still alive.
                if (r.status != 200 && r.status != 429 && r.status != 503)
                    failure = r.status ? "completion answered " + std::to_string(r.status) + ": " + r.body
                                       : "completion: " + r.error;
            }
            {
                std::lock_guard lock(state.mu);
                ++state.checks;
                if (failure.empty()) {
                    state.last_good = Clock::now();
                    state.ever_good = true;
                } else {
                    ++state.failures;
                    state.last_error = failure;
                    std::fprintf(stderr, "assistd-healthcheck: check failed: %s\n", failure.c_str());
                }
            }
            const auto next = started + std::chrono::milliseconds(interval_ms);
            while (!g_stop.load() && Clock::now() < next) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });

    const auto born = Clock::now();
    while (!g_stop.load()) {
        pollfd p{server, POLLIN, 0};
        if (::poll(&p, 1, 200) <= 0) continue;
        const int client = ::accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) continue;
        timeval tv{2, 0};
        ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[2048];
        const ssize_t n = ::recv(client, buf, sizeof buf - 1, 0);
        std::string line = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
        line = line.substr(0, line.find("\r\n"));
        int code = 404;
        std::string body = "{\"error\":\"not found: GET /livez or /status\"}\n";
        const bool livez = line.rfind("GET /livez ", 0) == 0, status = line.rfind("GET /status ", 0) == 0;
        if (livez || status) {
            std::lock_guard lock(state.mu);
            const auto now = Clock::now();
            // Before the first good check, the start-up itself counts as good
            // for one stale period (the model may still be loading).
            const auto reference = state.ever_good ? state.last_good : born;
            const long age_ms = static_cast<long>(
                std::chrono::duration_cast<std::chrono::milliseconds>(now - reference).count());
            const bool alive = age_ms <= stale_ms;
            code = alive || status ? 200 : 503;  // /status is informational
            std::ostringstream o;
            o << "{\"alive\":" << (alive ? "true" : "false") << ",\"target\":\"" << json_escape(target)
              << "\",\"deep\":" << (deep ? "true" : "false") << ",\"checks\":" << state.checks
              << ",\"failures\":" << state.failures << ",\"ms_since_good\":"
              << (state.ever_good ? std::to_string(age_ms) : "null") << ",\"last_error\":\""
              << json_escape(state.last_error) << "\"}\n";
            body = o.str();
        }
        const std::string reason = code == 200 ? "OK" : code == 503 ? "Service Unavailable" : "Not Found";
        const std::string resp = "HTTP/1.1 " + std::to_string(code) + " " + reason +
                                 "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                                 std::to_string(body.size()) + "\r\n\r\n" + body;
        ::send(client, resp.data(), resp.size(), MSG_NOSIGNAL);
        ::close(client);
    }
    checker.join();
    ::close(server);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // A closed stdout/stderr or a peer that went away must not kill the sidecar.
    ::signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage();
        return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "probe") return cmd_probe(argc - 2, argv + 2);
    if (cmd == "watch") return cmd_watch(argc - 2, argv + 2);
    if (cmd == "--help" || cmd == "-h") {
        usage();
        return 0;
    }
    std::fprintf(stderr, "assistd-healthcheck: unknown command '%s'\n", cmd.c_str());
    usage();
    return 2;
}
