// `assistd bench prefix`: the time to first token of a session's next turn
// as its history grows, with prefix reuse and with the cache off. A real
// server (scheduler, routes, HTTP) runs in this process on a loopback port;
// the client speaks HTTP/1.1 to it like any other: per history size, a fresh
// session gets one turn that brings it to that size, then the measured turn
// (a short message, streamed) whose first SSE frame is its first token.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "common/clock.h"
#include "serve/http_server.h"
#include "serve/kv_disk_tier.h"
#include "serve/metrics.h"
#include "serve/openai_routes.h"
#include "serve/scheduler.h"
#include "serve/sessions.h"

namespace assistd::cli {
namespace {

using Clk = std::chrono::steady_clock;
using nlohmann::json;

struct PrefixBenchOptions {
    ModelOptions model;
    std::vector<size_t> histories = {100, 250, 500, 1000, 2000};
    size_t repeats = 3;           // sessions per history size (the median is printed)
    size_t message_words = 16;    // the measured turn's new message
    size_t answer_tokens = 8;     // max_tokens of every turn
    double max_seconds = 900;     // bound on the whole run
    size_t prefill_chunk = 256;
    bool json = false;
};

// ---- a blocking loopback HTTP client -----------------------------------------

struct Exchange {
    int status = 0;
    std::string body;           // de-chunked
    double first_data_s = -1;   // seconds from sending to the first SSE "data:" bytes
    std::string error;
};

Exchange post(uint16_t port, const std::string& path, const std::string& body, double timeout_s) {
    Exchange ex;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        ex.error = "socket() failed";
        return ex;
    }
    timeval tv{static_cast<time_t>(timeout_s), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        ex.error = "cannot connect to 127.0.0.1:" + std::to_string(port);
        return ex;
    }
    const std::string request = "POST " + path +
                                " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                                "Connection: close\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\n\r\n" + body;
    const auto t0 = Clk::now();
    for (size_t off = 0; off < request.size();) {
        const ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
        if (n <= 0) {
            ::close(fd);
            ex.error = "send failed";
            return ex;
        }
        off += static_cast<size_t>(n);
    }
    std::string raw;
    char buf[16384];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        raw.append(buf, static_cast<size_t>(n));
        if (ex.first_data_s < 0 && raw.find("data: ") != std::string::npos)
            ex.first_data_s = std::chrono::duration<double>(Clk::now() - t0).count();
    }
    ::close(fd);
    const size_t head_end = raw.find("\r\n\r\n");
    if (head_end == std::string::npos || raw.size() < 12) {
        ex.error = "no HTTP response";
        return ex;
    }
    ex.status = std::atoi(raw.c_str() + 9);
    const std::string head = raw.substr(0, head_end);
    size_t pos = head_end + 4;
    if (head.find("chunked") == std::string::npos) {
        ex.body = raw.substr(pos);
        return ex;
    }
    for (;;) {
        const size_t eol = raw.find("\r\n", pos);
        if (eol == std::string::npos) break;
        const size_t n = std::strtoul(raw.c_str() + pos, nullptr, 16);
        if (n == 0 || raw.size() < eol + 2 + n) break;
        ex.body.append(raw, eol + 2, n);
        pos = eol + 2 + n + 2;
    }
    return ex;
}

// The usage object of an SSE stream's usage chunk (null if none).
json stream_usage(const std::string& body) {
    json usage;
    for (size_t pos = 0; (pos = body.find("data: ", pos)) != std::string::npos;) {
        const size_t end = body.find("\n\n", pos);
        const std::string payload = body.substr(pos + 6, end == std::string::npos ? std::string::npos : end - pos - 6);
        pos = end == std::string::npos ? body.size() : end;
        const json j = json::parse(payload, nullptr, false);
        if (j.is_object() && j.contains("usage") && j["usage"].is_object()) usage = j["usage"];
    }
    return usage;
}

// ---- the measurement ------------------------------------------------------------

const char* const kWords[] = {"garden", "river",  "lantern", "morning", "quiet",  "paper",   "window", "orange",
                              "stone",  "travel", "music",   "winter",  "bridge", "candle",  "forest", "silver",
                              "market", "letter", "harbor",  "meadow",  "cloud",  "thunder", "little", "yellow"};

std::string words(std::mt19937_64& rng, size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i) {
        if (i) s += ' ';
        s += kWords[rng() % std::size(kWords)];
    }
    return s;
}

struct Sample {
    size_t history = 0;        // tokens before the new message (the turn's prompt minus its new part)
    size_t prompt_tokens = 0;  // the measured turn's prompt
    size_t cached_tokens = 0;
    double ttft_s = 0;
};

struct Point {
    size_t target = 0;
    std::vector<Sample> samples;
};

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

class PrefixBench {
public:
    PrefixBench(const PrefixBenchOptions& o, engine::Model& model) : o_(o), model_(model) {}

    // A first message that makes a one-turn conversation of about `tokens` prompt tokens.
    std::string first_message(size_t tokens, std::mt19937_64& rng) const {
        const auto& tok = model_.tokenizer();
        auto count = [&](const std::string& text) {
            return engine::encode_chat(tok, model_.chat_template().render({{"user", text}}, true), tok.add_bos_default())
                .size();
        };
        // Every word is at least one token: the shortest prefix of `tokens` words that is long enough.
        const std::string all = words(rng, tokens);
        std::vector<size_t> ends;  // byte offset after each word
        for (size_t i = 0; i <= all.size(); ++i)
            if (i == all.size() || all[i] == ' ') ends.push_back(i);
        size_t lo = 1, hi = ends.size();
        while (lo < hi) {
            const size_t mid = (lo + hi) / 2;
            if (count(all.substr(0, ends[mid - 1])) >= tokens) hi = mid;
            else lo = mid + 1;
        }
        return all.substr(0, ends[lo - 1]);
    }

    // One mode: reuse from RAM, from the disk tier (RAM holds no finished
    // conversation, so every turn's KV goes to disk and back), or no reuse;
    // its own scheduler and server on the same model.
    enum class Mode { kRam, kDisk, kOff };
    Result<std::vector<Point>> run(Mode mode, Clk::time_point deadline) {
        using namespace assistd::serve;
        const bool prefix_cache = mode != Mode::kOff;
        auto sessions = ServerSessionStore::open("", SystemClock::instance());
        if (!sessions) return sessions.error();
        std::unique_ptr<KvDiskTier> disk;
        if (mode == Mode::kDisk) {
            auto tier = KvDiskTier::open({(*sessions)->path().string() + "/kv", uint64_t{16} << 30, 16},
                                         model_.kv_fingerprint());
            if (!tier) return tier.error();
            disk = std::move(*tier);
        }
        SchedulerConfig sc;
        sc.max_running = 4;
        sc.max_batch_tokens = o_.model.batch_tokens;
        sc.prefill_chunk_tokens = std::min(o_.prefill_chunk, o_.model.batch_tokens);
        auto precision = engine::precision_from_name(o_.model.precision);
        if (precision) sc.fixed_precision = *precision;
        sc.prefix_cache = prefix_cache;
        if (disk) {
            sc.prefix_cache_blocks = 1;
            sc.kv_disk = disk.get();
        }
        ServeMetrics metrics;
        Scheduler scheduler(model_, sc, SystemClock::instance(), &metrics);
        scheduler.start();
        OpenAiRoutesConfig rc;
        rc.model_id = "bench";
        OpenAiRoutes routes(model_, scheduler, metrics, SystemClock::instance(), rc, &(*sessions)->store());
        HttpServerConfig hc;
        hc.port = 0;
        hc.max_body_bytes = size_t{8} << 20;
        auto server = HttpServer::start(hc, [&routes](const HttpRequest& r) { return routes.handle(r); });
        if (!server) return server.error();
        const uint16_t port = (*server)->port();

        std::vector<Point> points;
        std::mt19937_64 rng(7);
        Error failure;
        for (size_t target : o_.histories) {
            Point point{target, {}};
            for (size_t r = 0; r < o_.repeats && Clk::now() < deadline && failure.message.empty(); ++r) {
                const std::string id = std::string(mode == Mode::kRam ? "reuse-" : mode == Mode::kDisk ? "disk-" : "full-") +
                                       std::to_string(target) +
                                       "-" + std::to_string(r);
                const size_t first_tokens = target > o_.answer_tokens ? target - o_.answer_tokens : 1;
                const json turn1 = {{"messages", {{{"role", "user"}, {"content", first_message(first_tokens, rng)}}}},
                                    {"max_tokens", o_.answer_tokens},
                                    {"temperature", 0},
                                    {"session_id", id}};
                const Exchange e1 = post(port, "/v1/chat/completions", turn1.dump(), 300);
                if (e1.status != 200) {
                    failure = make_error(ErrorCode::kInternal, "turn 1 of session " + id + " failed: " +
                                                                   (e1.error.empty() ? e1.body : e1.error));
                    break;
                }
                const json turn2 = {
                    {"messages", {{{"role", "user"}, {"content", words(rng, o_.message_words)}}}},
                    {"max_tokens", o_.answer_tokens},
                    {"temperature", 0},
                    {"stream", true},
                    {"stream_options", {{"include_usage", true}}},
                    {"session_id", id}};
                const Exchange e2 = post(port, "/v1/chat/completions", turn2.dump(), 300);
                const json usage = stream_usage(e2.body);
                if (e2.status != 200 || e2.first_data_s < 0 || !usage.is_object()) {
                    failure = make_error(ErrorCode::kInternal, "the measured turn of session " + id + " failed: " +
                                                                   (e2.error.empty() ? e2.body : e2.error));
                    break;
                }
                const json j1 = json::parse(e1.body, nullptr, false);
                Sample s;
                s.prompt_tokens = usage["prompt_tokens"].get<size_t>();
                s.cached_tokens = usage["prompt_tokens_details"]["cached_tokens"].get<size_t>();
                s.history = j1["usage"]["prompt_tokens"].get<size_t>() + j1["usage"]["completion_tokens"].get<size_t>();
                s.ttft_s = e2.first_data_s;
                point.samples.push_back(s);
            }
            if (!point.samples.empty()) points.push_back(std::move(point));
            if (!failure.message.empty() || Clk::now() >= deadline) break;
        }
        (*server)->stop();
        scheduler.stop();
        if (!failure.message.empty()) return failure;
        return points;
    }

private:
    const PrefixBenchOptions& o_;
    engine::Model& model_;
};

json point_json(const Point& p) {
    std::vector<double> ttft, history, cached, prompt;
    for (const auto& s : p.samples) {
        ttft.push_back(s.ttft_s);
        history.push_back(static_cast<double>(s.history));
        cached.push_back(static_cast<double>(s.cached_tokens));
        prompt.push_back(static_cast<double>(s.prompt_tokens));
    }
    return {{"target_history_tokens", p.target},
            {"history_tokens", median(history)},
            {"prompt_tokens", median(prompt)},
            {"cached_tokens", median(cached)},
            {"ttft_ms_median", median(ttft) * 1e3},
            {"ttft_ms_min", *std::min_element(ttft.begin(), ttft.end()) * 1e3},
            {"ttft_ms_max", *std::max_element(ttft.begin(), ttft.end()) * 1e3},
            {"sessions", p.samples.size()}};
}

int run_prefix_bench(const PrefixBenchOptions& o) {
    if (o.histories.empty() || o.repeats == 0 || o.answer_tokens == 0 || o.message_words == 0) {
        std::fprintf(stderr, "assistd bench prefix: --histories, --repeats, --answer-tokens and --message-words "
                             "must be non-empty and >= 1\n");
        return 2;
    }
    if (o.model.precision != "native" && !parse_precision(o.model.precision)) return 2;
    ModelOptions mo = o.model;
    const size_t longest = *std::max_element(o.histories.begin(), o.histories.end());
    if (mo.ctx_size == 0) mo.ctx_size = std::max<size_t>(4096, longest + 512);
    auto model = load_model(mo, "bench prefix", 4 + 64);
    if (!model) return 2;
    if (model->info().n_ctx < longest + 256) {
        std::fprintf(stderr,
                     "assistd bench prefix: the model's context (%zu tokens) is too short for a %zu-token history; "
                     "use a model with a longer context (e.g. assistd model random --shape smollm2-135m)\n",
                     model->info().n_ctx, longest);
        return 2;
    }

    PrefixBench bench(o, *model);
    const auto deadline = Clk::now() + std::chrono::duration_cast<Clk::duration>(std::chrono::duration<double>(o.max_seconds));
    json out;
    out["model"] = o.model.path;
    out["arch"] = model->info().arch_name;
    out["precision"] = o.model.precision;
    out["threads"] = model->n_threads();
    out["message_words"] = o.message_words;
    out["answer_tokens"] = o.answer_tokens;
    // modes[0]: no reuse, [1]: reuse from RAM, [2]: reuse from the disk tier.
    std::vector<Point> modes[3];
    const PrefixBench::Mode order[3] = {PrefixBench::Mode::kOff, PrefixBench::Mode::kRam, PrefixBench::Mode::kDisk};
    for (int m : {1, 2, 0}) {
        auto points = bench.run(order[m], deadline);
        if (!points) {
            std::fprintf(stderr, "assistd bench prefix: %s\n", points.error().message.c_str());
            return 1;
        }
        modes[m] = std::move(*points);
    }
    out["with_reuse"] = json::array();
    out["from_disk"] = json::array();
    out["without_reuse"] = json::array();
    for (const auto& p : modes[1]) out["with_reuse"].push_back(point_json(p));
    for (const auto& p : modes[2]) out["from_disk"].push_back(point_json(p));
    for (const auto& p : modes[0]) out["without_reuse"].push_back(point_json(p));
    if (o.json) {
        std::printf("%s\n", out.dump().c_str());
        return 0;
    }
    std::printf("model %s (%s), precision %s, %d threads; next turn: %zu new words, max_tokens %zu; median of %zu sessions\n",
                o.model.path.c_str(), model->info().arch_name.c_str(), o.model.precision.c_str(), model->n_threads(),
                o.message_words, o.answer_tokens, o.repeats);
    std::printf("%15s %14s %16s %18s %17s %14s\n", "history tokens", "prompt tokens", "cached (reuse)",
                "TTFT reuse (ms)", "TTFT disk (ms)", "TTFT full (ms)");
    auto cell = [](const json& j, const char* key, const char* format) {
        if (j.is_null()) return std::string("-");
        char b[32];
        std::snprintf(b, sizeof b, format, j[key].get<double>());
        return std::string(b);
    };
    for (size_t i = 0; i < std::max({modes[0].size(), modes[1].size(), modes[2].size()}); ++i) {
        const json r = i < modes[1].size() ? point_json(modes[1][i]) : json();
        const json d = i < modes[2].size() ? point_json(modes[2][i]) : json();
        const json f = i < modes[0].size() ? point_json(modes[0][i]) : json();
        const json& any = r.is_null() ? f : r;
        std::printf("%15s %14s %16s %18s %17s %14s\n", cell(any, "history_tokens", "%.0f").c_str(),
                    cell(any, "prompt_tokens", "%.0f").c_str(), cell(r, "cached_tokens", "%.0f").c_str(),
                    cell(r, "ttft_ms_median", "%.1f").c_str(), cell(d, "ttft_ms_median", "%.1f").c_str(),
                    cell(f, "ttft_ms_median", "%.1f").c_str());
    }
    return 0;
}

}  // namespace

void register_bench_prefix(CLI::App& bench, int& exit_code) {
    auto o = std::make_shared<PrefixBenchOptions>();
    CLI::App* cmd = bench.add_subcommand(
        "prefix", "Time to first token of a session's next turn as its history grows, with and without prefix reuse");
    add_model_options(*cmd, o->model);
    cmd->add_option("--histories", o->histories, "History sizes in tokens (space or comma separated)")
        ->delimiter(',')
        ->capture_default_str();
    cmd->add_option("--repeats", o->repeats, "Sessions per history size (the median is printed)")->capture_default_str();
    cmd->add_option("--message-words", o->message_words, "Words in the measured turn's new message")
        ->capture_default_str();
    cmd->add_option("--answer-tokens", o->answer_tokens, "max_tokens of each turn")->capture_default_str();
    cmd->add_option("--prefill-chunk", o->prefill_chunk, "Prompt tokens per scheduler step")->capture_default_str();
    cmd->add_option("--max-seconds", o->max_seconds, "Bound on the whole run")->capture_default_str();
    cmd->add_flag("--json", o->json, "Print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_prefix_bench(*o); });
}

}  // namespace assistd::cli
