// assistd-loadgen: a loopback load generator for `assistd serve`. One thread,
// epoll, raw non-blocking sockets, its own HTTP/1.1 + chunked + SSE parser
// (no Beast, so it compiles in seconds). Bounded: a fixed number of requests
// and a hard wall-clock cap (--timeout-s); whatever is unfinished then counts
// as an error.
//
//   burst:    --requests N streaming requests opened at once (one connection
//             each); with --check every stream's text must equal the answer
//             the server gives the same prompt alone, asked first.
//   sessions: --concurrency C clients, each sending --per-session R requests
//             one after the other; aggregate generated tokens/s, time to
//             first token and inter-token latency.
//
// Time to first token: to the first frame carrying text, or on the chat
// route the first frame at all (the server sends the role frame with the
// first token). Inter-token: the gaps between text-carrying frames; a stream
// whose tokens mostly print nothing (random-weight models) gives its mean gap.
// Prints one summary (or --json / --row for bench/load.sh); exit status 1
// when a request failed or a --check mismatched.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0, Clock::time_point t) { return std::chrono::duration<double>(t - t0).count(); }

struct Options {
    std::string mode = "burst";
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string route = "completions";  // or chat
    size_t requests = 100;              // burst
    size_t concurrency = 8;             // sessions
    size_t per_session = 4;             // sessions
    size_t max_tokens = 16;
    double temperature = 0;
    bool ignore_eos = false;
    bool check = false;
    double timeout_s = 300;
    std::vector<std::string> prompts = {"Once upon a time", "The little dog", "Lily and Tom went to the park",
                                        "One day, a big bird", "The sun was hot and"};
    std::string label;
    bool json_out = false;
    bool row = false;
};

// Raises the open-file limit to the hard limit: 10,000 streams need 10,000 sockets.
size_t raise_nofile_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
        ::getrlimit(RLIMIT_NOFILE, &rl);
    }
    return static_cast<size_t>(rl.rlim_cur);
}

std::string request_body(const Options& o, const std::string& prompt) {
    json b = {{"max_tokens", o.max_tokens},
              {"temperature", o.temperature},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}}};
    if (o.ignore_eos) b["ignore_eos"] = true;
    if (o.route == "chat")
        b["messages"] = json::array({{{"role", "user"}, {"content", prompt}}});
    else
        b["prompt"] = prompt;
    const std::string body = b.dump();
    const std::string path = o.route == "chat" ? "/v1/chat/completions" : "/v1/completions";
    return "POST " + path + " HTTP/1.1\r\nHost: " + o.host + "\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// One request on its own connection, parsed as bytes arrive.
struct Stream {
    int fd = -1;
    size_t prompt = 0;
    size_t session = 0;
    std::string out;
    size_t sent = 0;
    std::string raw;        // unparsed bytes
    bool head_done = false;
    bool chunked = false;
    size_t content_length = 0;
    std::string body;       // de-chunked body
    size_t body_scanned = 0;
    int status = 0;
    bool saw_retry_after = false;
    bool complete = false;  // the HTTP response ended
    bool done_frame = false;
    bool error_frame = false;
    std::string text;
    size_t completion_tokens = 0;
    std::string finish_reason;
    std::string failure;  // why it failed, if it did
    Clock::time_point start, first_token, last_frame, end;
    bool got_first = false;
    std::vector<double> gaps;  // between content-carrying frames
};

void parse_frames(Stream& s) {
    for (;;) {
        const size_t end = s.body.find("\n\n", s.body_scanned);
        if (end == std::string::npos) return;
        const std::string frame = s.body.substr(s.body_scanned, end - s.body_scanned);
        s.body_scanned = end + 2;
        if (frame.rfind("data: ", 0) != 0) {
            s.failure = "an SSE frame not starting with 'data: '";
            continue;
        }
        const std::string data = frame.substr(6);
        if (data == "[DONE]") {
            s.done_frame = true;
            continue;
        }
        const json j = json::parse(data, nullptr, false);
        if (j.is_discarded()) {
            s.failure = "an SSE frame that is not JSON";
            continue;
        }
        if (j.contains("error")) {
            s.error_frame = true;
            s.failure = "error frame: " + j["error"].value("message", std::string("?"));
            continue;
        }
        const auto now = Clock::now();
        if (j.contains("usage") && j["usage"].is_object())
            s.completion_tokens = j["usage"].value("completion_tokens", size_t{0});
        bool content = false;
        if (j.contains("choices"))
            for (const auto& c : j["choices"]) {
                std::string piece;
                if (c.contains("delta")) {
                    if (c["delta"].contains("content") && c["delta"]["content"].is_string())
                        piece = c["delta"]["content"].get<std::string>();
                    if (c["delta"].contains("role")) content = true;  // the first chunk: a token is out
                } else if (c.contains("text") && c["text"].is_string()) {
                    piece = c["text"].get<std::string>();
                }
                if (!piece.empty()) content = true;
                s.text += piece;
                if (c.contains("finish_reason") && c["finish_reason"].is_string())
                    s.finish_reason = c["finish_reason"].get<std::string>();
            }
        if (content) {
            if (!s.got_first) {
                s.got_first = true;
                s.first_token = now;
            } else {
                s.gaps.push_back(seconds_since(s.last_frame, now));
            }
            s.last_frame = now;
        }
    }
}

// Consumes s.raw; sets s.complete when the response is whole.
void parse_http(Stream& s) {
    if (!s.head_done) {
        const size_t head_end = s.raw.find("\r\n\r\n");
        if (head_end == std::string::npos) return;
        const std::string head = s.raw.substr(0, head_end);
        s.raw.erase(0, head_end + 4);
        s.head_done = true;
        const size_t sp = head.find(' ');
        s.status = sp == std::string::npos ? 0 : std::atoi(head.c_str() + sp + 1);
        std::string lower = head;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        s.chunked = lower.find("transfer-encoding: chunked") != std::string::npos;
        s.saw_retry_after = lower.find("\r\nretry-after:") != std::string::npos;
        if (const size_t cl = lower.find("\r\ncontent-length:"); cl != std::string::npos)
            s.content_length = std::strtoul(lower.c_str() + cl + 17, nullptr, 10);
    }
    if (!s.chunked) {
        if (s.raw.size() >= s.content_length) {
            s.body = s.raw.substr(0, s.content_length);
            s.raw.clear();
            s.complete = true;
        }
        return;
    }
    for (;;) {
        const size_t eol = s.raw.find("\r\n");
        if (eol == std::string::npos) return;
        const size_t n = std::strtoul(s.raw.c_str(), nullptr, 16);
        if (s.raw.size() < eol + 2 + n + 2) return;
        s.body.append(s.raw, eol + 2, n);
        s.raw.erase(0, eol + 2 + n + 2);
        if (s.status == 200) parse_frames(s);
        if (n == 0) {
            s.complete = true;
            return;
        }
    }
}

double quantile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
    return v[k];
}

class LoadRunner {
public:
    explicit LoadRunner(const Options& o) : o_(o) {
        for (const auto& p : o_.prompts) bodies_.push_back(request_body(o_, p));
        epfd_ = ::epoll_create1(0);
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(static_cast<uint16_t>(o_.port));
        ::inet_pton(AF_INET, o_.host.c_str(), &addr_.sin_addr);
    }
    ~LoadRunner() {
        for (auto& s : streams_)
            if (s && s->fd >= 0) ::close(s->fd);
        ::close(epfd_);
    }

    // Opens a stream for prompt p; false when the socket could not be made.
    Stream* open(size_t prompt, size_t session) {
        auto s = std::make_unique<Stream>();
        s->prompt = prompt;
        s->session = session;
        s->out = bodies_[prompt];
        s->start = Clock::now();
        s->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s->fd < 0) {
            s->failure = std::string("socket: ") + std::strerror(errno);
            s->end = Clock::now();
            finished_.push_back(std::move(s));
            return nullptr;
        }
        const int one = 1;
        ::setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(s->fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_) != 0 && errno != EINPROGRESS) {
            s->failure = std::string("connect: ") + std::strerror(errno);
            ::close(s->fd);
            s->fd = -1;
            s->end = Clock::now();
            finished_.push_back(std::move(s));
            return nullptr;
        }
        epoll_event ev{};
        ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
        const size_t index = slot();
        ev.data.u64 = index;
        ::epoll_ctl(epfd_, EPOLL_CTL_ADD, s->fd, &ev);
        streams_[index] = std::move(s);
        ++open_;
        return streams_[index].get();
    }

    // Runs until every open stream ended or the deadline; `on_done` may open more.
    template <class OnDone>
    void run(Clock::time_point deadline, OnDone on_done) {
        std::vector<epoll_event> events(1024);
        char buf[65536];
        while (open_ > 0) {
            const auto now = Clock::now();
            if (now >= deadline) break;
            const int wait_ms = static_cast<int>(std::min<double>(1000, seconds_since(now, deadline) * 1000) + 1);
            const int n = ::epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), wait_ms);
            for (int i = 0; i < n; ++i) {
                const size_t index = events[static_cast<size_t>(i)].data.u64;
                Stream* s = streams_[index].get();
                if (!s) continue;
                bool closed = false;
                if (s->sent < s->out.size()) {
                    const ssize_t w =
                        ::send(s->fd, s->out.data() + s->sent, s->out.size() - s->sent, MSG_NOSIGNAL);
                    if (w > 0) {
                        s->sent += static_cast<size_t>(w);
                        if (s->sent == s->out.size()) {
                            epoll_event ev{};
                            ev.events = EPOLLIN | EPOLLRDHUP;
                            ev.data.u64 = index;
                            ::epoll_ctl(epfd_, EPOLL_CTL_MOD, s->fd, &ev);
                        }
                    } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                        s->failure = std::string("send: ") + std::strerror(errno);
                        closed = true;
                    }
                }
                while (!closed) {
                    const ssize_t r = ::recv(s->fd, buf, sizeof buf, 0);
                    if (r > 0) {
                        s->raw.append(buf, static_cast<size_t>(r));
                        parse_http(*s);
                        continue;
                    }
                    if (r == 0) closed = true;
                    else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                        s->failure = std::string("recv: ") + std::strerror(errno);
                        closed = true;
                    }
                    break;
                }
                if (s->complete || closed) {
                    s->end = Clock::now();
                    if (!s->complete && s->failure.empty())
                        s->failure = s->head_done ? "the connection closed mid-response" : "the connection closed without a response";
                    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, s->fd, nullptr);
                    ::close(s->fd);
                    s->fd = -1;
                    --open_;
                    free_.push_back(index);
                    auto owned = std::move(streams_[index]);
                    on_done(*owned);
                    finished_.push_back(std::move(owned));
                }
            }
        }
        // Past the cap: what is left failed.
        for (auto& s : streams_) {
            if (!s) continue;
            ::close(s->fd);
            s->fd = -1;
            s->end = Clock::now();
            s->failure = "unfinished at the --timeout-s cap";
            finished_.push_back(std::move(s));
        }
        open_ = 0;
    }

    std::vector<std::unique_ptr<Stream>>& finished() { return finished_; }

private:
    size_t slot() {
        if (!free_.empty()) {
            const size_t i = free_.back();
            free_.pop_back();
            return i;
        }
        streams_.emplace_back();
        return streams_.size() - 1;
    }

    const Options& o_;
    std::vector<std::string> bodies_;
    int epfd_ = -1;
    sockaddr_in addr_{};
    std::vector<std::unique_ptr<Stream>> streams_;
    std::vector<size_t> free_;
    size_t open_ = 0;
    std::vector<std::unique_ptr<Stream>> finished_;
};

// Why a finished stream is not a success ("" when it is one).
std::string judge(const Stream& s) {
    if (!s.failure.empty()) return s.failure;
    if (s.status != 200) return "HTTP " + std::to_string(s.status) + ": " + s.body.substr(0, 200);
    if (!s.done_frame) return "no data: [DONE]";
    if (s.error_frame) return "an error frame";
    return "";
}

int run(const Options& o) {
    const size_t nofile = raise_nofile_limit();
    const auto cap = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
    if (o.mode == "burst" && o.requests + 16 > nofile) {
        std::fprintf(stderr, "assistd-loadgen: %zu requests need as many sockets; the open-file limit is %zu\n",
                     o.requests, nofile);
        return 2;
    }

    // The reference answers: each prompt alone.
    std::vector<std::string> reference(o.prompts.size());
    if (o.check) {
        for (size_t p = 0; p < o.prompts.size(); ++p) {
            LoadRunner single(o);
            single.open(p, 0);
            single.run(cap, [](Stream&) {});
            const Stream& s = *single.finished().front();
            if (const std::string why = judge(s); !why.empty()) {
                std::fprintf(stderr, "assistd-loadgen: the reference request for prompt %zu failed: %s\n", p, why.c_str());
                return 1;
            }
            reference[p] = s.text;
        }
    }

    LoadRunner runner(o);
    const auto t0 = Clock::now();
    if (o.mode == "burst") {
        for (size_t i = 0; i < o.requests; ++i) runner.open(i % o.prompts.size(), i);
        runner.run(cap, [](Stream&) {});
    } else {
        std::vector<size_t> sent(o.concurrency, 0);
        for (size_t c = 0; c < o.concurrency; ++c) {
            runner.open(c % o.prompts.size(), c);
            sent[c] = 1;
        }
        runner.run(cap, [&](Stream& s) {
            if (sent[s.session] < o.per_session && Clock::now() < cap) {
                ++sent[s.session];
                runner.open((s.session + sent[s.session]) % o.prompts.size(), s.session);
            }
        });
    }
    const double wall = seconds_since(t0, Clock::now());

    std::vector<double> completion, ttft, itl;
    std::map<std::string, size_t> errors;
    std::map<int, size_t> statuses;
    size_t ok = 0, mismatched = 0, tokens = 0, itl_from_means = 0;
    for (const auto& sp : runner.finished()) {
        const Stream& s = *sp;
        ++statuses[s.status];
        if (const std::string why = judge(s); !why.empty()) {
            ++errors[why.substr(0, 120)];
            continue;
        }
        if (o.check && s.text != reference[s.prompt]) {
            ++mismatched;
            if (mismatched <= 3)
                std::fprintf(stderr, "mismatch on prompt %zu:\n  alone:  %s\n  loaded: %s\n", s.prompt,
                             reference[s.prompt].c_str(), s.text.c_str());
            continue;
        }
        ++ok;
        tokens += s.completion_tokens;
        completion.push_back(seconds_since(s.start, s.end));
        if (s.got_first) ttft.push_back(seconds_since(s.start, s.first_token));
        if (s.gaps.size() + 1 >= s.completion_tokens * 9 / 10) {
            itl.insert(itl.end(), s.gaps.begin(), s.gaps.end());
        } else if (s.got_first && s.completion_tokens > 1) {
            // Most tokens printed nothing (a random-weight model), so frames do not
            // mark tokens: each gap counts as the stream's mean from first token to end.
            const double mean = seconds_since(s.first_token, s.end) / static_cast<double>(s.completion_tokens - 1);
            itl.insert(itl.end(), s.completion_tokens - 1, mean);
            ++itl_from_means;
        }
    }
    const size_t total = runner.finished().size();
    size_t failed = 0;
    for (auto& [why, n] : errors) failed += n;

    json r = {{"label", o.label},
              {"mode", o.mode},
              {"requests", total},
              {"ok", ok},
              {"errors", failed},
              {"mismatched", mismatched},
              {"concurrency", o.mode == "burst" ? o.requests : o.concurrency},
              {"wall_s", wall},
              {"completion_tokens", tokens},
              {"tokens_per_s", wall > 0 ? static_cast<double>(tokens) / wall : 0},
              {"completion_p50_s", quantile(completion, 0.5)},
              {"completion_p99_s", quantile(completion, 0.99)},
              {"ttft_p50_s", quantile(ttft, 0.5)},
              {"ttft_p99_s", quantile(ttft, 0.99)},
              {"itl_p50_s", quantile(itl, 0.5)},
              {"itl_p99_s", quantile(itl, 0.99)},
              {"itl_samples", itl.size()},
              {"itl_from_mean_streams", itl_from_means}};
    json st = json::object();
    for (auto& [code, n] : statuses) st[std::to_string(code)] = n;
    r["statuses"] = st;
    json er = json::object();
    for (auto& [why, n] : errors) er[why] = n;
    r["error_kinds"] = er;

    if (o.json_out) {
        std::printf("%s\n", r.dump().c_str());
    } else if (o.row) {
        std::printf("| %s | %zu | %zu/%zu | %zu | %.2f | %.1f | %.3f / %.3f | %.1f / %.1f | %.1f / %.1f%s |\n",
                    o.label.c_str(), r["concurrency"].get<size_t>(), ok, total, failed + mismatched, wall,
                    r["tokens_per_s"].get<double>(), quantile(completion, 0.5), quantile(completion, 0.99),
                    quantile(ttft, 0.5) * 1e3, quantile(ttft, 0.99) * 1e3, quantile(itl, 0.5) * 1e3,
                    quantile(itl, 0.99) * 1e3, itl_from_means > 0 ? " (mean)" : "");
    } else {
        std::printf("%s%s: %zu requests, %zu ok, %zu failed, %zu mismatched; wall %.2f s\n", o.label.c_str(),
                    o.label.empty() ? o.mode.c_str() : "", total, ok, failed, mismatched, wall);
        std::printf("  generated %zu tokens: %.1f tok/s aggregate\n", tokens, r["tokens_per_s"].get<double>());
        std::printf("  completion p50 %.3f s  p99 %.3f s\n", quantile(completion, 0.5), quantile(completion, 0.99));
        std::printf("  time to first token p50 %.1f ms  p99 %.1f ms\n", quantile(ttft, 0.5) * 1e3,
                    quantile(ttft, 0.99) * 1e3);
        std::printf("  inter-token p50 %.2f ms  p99 %.2f ms (%zu gaps; %zu streams printed too little to time "
                    "tokens and gave their mean gap)\n",
                    quantile(itl, 0.5) * 1e3, quantile(itl, 0.99) * 1e3, itl.size(), itl_from_means);
        for (auto& [why, n] : errors) std::printf("  error x%zu: %s\n", n, why.c_str());
    }
    return failed + mismatched == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"assistd-loadgen: loopback load against assistd serve (bounded in count and time)"};
    app.add_option("--mode", o.mode, "burst (N streams at once) or sessions (C clients, R requests each)")
        ->check(CLI::IsMember({"burst", "sessions"}))
        ->capture_default_str();
    app.add_option("--host", o.host, "Server address (loopback)")->capture_default_str();
    app.add_option("--port", o.port, "Server port")->required()->check(CLI::Range(1, 65535));
    app.add_option("--route", o.route, "completions or chat")->check(CLI::IsMember({"completions", "chat"}))
        ->capture_default_str();
    app.add_option("--requests", o.requests, "burst: streams opened at once")->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("--concurrency", o.concurrency, "sessions: clients at once")->capture_default_str()
        ->check(CLI::Range(1, 10000));
    app.add_option("--per-session", o.per_session, "sessions: requests per client, one after the other")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("--max-tokens", o.max_tokens, "max_tokens of every request")->capture_default_str();
    app.add_option("--temperature", o.temperature, "temperature of every request")->capture_default_str();
    app.add_flag("--ignore-eos", o.ignore_eos, "ask for exactly max_tokens tokens (our ignore_eos extension)");
    app.add_flag("--check", o.check, "every stream's text must equal the prompt's answer when asked alone");
    app.add_option("--timeout-s", o.timeout_s, "hard wall-clock cap; unfinished requests count as errors")
        ->capture_default_str()
        ->check(CLI::Range(1.0, 3600.0));
    app.add_option("--prompt", o.prompts, "prompts, used round robin (default: five story openings)");
    app.add_option("--label", o.label, "a name for the summary");
    app.add_flag("--json", o.json_out, "one JSON object");
    app.add_flag("--row", o.row, "one Markdown table row (bench/load.sh)");
    CLI11_PARSE(app, argc, argv);
    if (o.host != "127.0.0.1" && o.host != "localhost") {
        std::fprintf(stderr, "assistd-loadgen: loopback only (--host 127.0.0.1)\n");
        return 2;
    }
    if (o.host == "localhost") o.host = "127.0.0.1";
    return run(o);
}
