// HttpServer against clients that break the protocol: oversized headers and
// bodies, a header trickled a byte at a time, malformed request lines and
// chunked bodies, ambiguous body lengths (request smuggling) and two
// Authorization headers. Raw loopback sockets; every wait is bounded.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "http_test_client.h"
#include "serve/auth.h"
#include "serve/http_server.h"
#include "serve/rate_limit.h"

namespace assistd::serve {
namespace {

using namespace test_support;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

// What one raw exchange came to.
struct RawReply {
    std::string raw;
    Reply reply;
    bool parsed = false;  // a whole response arrived
    bool closed = false;  // then the server closed (end of stream or reset)
};

// Reads until the server closes or `limit` passes.
RawReply read_until_closed(int fd, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    RawReply out;
    const auto until = Clock::now() + limit;
    char buf[8192];
    while (Clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            out.raw.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            out.closed = true;
            break;
        }
    }
    out.parsed = parse_reply(out.raw, out.reply) > 0;
    return out;
}

RawReply send_raw(uint16_t port, const std::string& bytes) {
    const int fd = connect_loopback(port);
    EXPECT_GE(fd, 0);
    if (fd < 0) return {};
    send_all(fd, bytes);
    RawReply r = read_until_closed(fd);
    ::close(fd);
    return r;
}

// An OpenAI-style error with this status and code, after which the server closed.
void expect_error_and_close(const RawReply& r, int status, const std::string& code,
                            const std::string& what) {
    ASSERT_TRUE(r.parsed) << what << ": no answer, only " << r.raw.size() << " bytes: " << r.raw;
    EXPECT_EQ(r.reply.status, status) << what << ": " << r.raw;
    const json j = r.reply.json_body();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": " << r.reply.body;
    const json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty()) << what;
    EXPECT_EQ(e["type"], "invalid_request_error") << what;
    EXPECT_TRUE(e.contains("param")) << what;
    EXPECT_EQ(e["code"], code) << what << ": " << r.reply.body;
    EXPECT_EQ(r.reply.headers.count("connection") ? r.reply.headers.at("connection") : "", "close")
        << what;
    EXPECT_TRUE(r.closed) << what << ": the connection must be closed after the answer";
}

// An HttpServer whose handler answers 200 with what it saw, 413 for a body over the limit.
struct RecordingServer {
    explicit RecordingServer(HttpServerConfig hc = {}) {
        hc.port = 0;
        auto s = HttpServer::start(hc, [this](const HttpRequest& r) {
            {
                std::lock_guard lk(mu);
                seen.push_back(r);
            }
            HttpResponse res;
            res.status = r.body_too_large ? 413 : 200;
            res.body = json{{"target", r.target}, {"body", r.body}}.dump();
            return res;
        });
        EXPECT_TRUE(s.ok());
        server = std::move(*s);
    }
    ~RecordingServer() { server->stop(); }
    uint16_t port() const { return server->port(); }
    std::vector<HttpRequest> requests() {
        std::lock_guard lk(mu);
        return seen;
    }
    bool saw_target(const std::string& target) {
        for (const auto& r : requests())
            if (r.target == target) return true;
        return false;
    }

    std::unique_ptr<HttpServer> server;
    std::mutex mu;
    std::vector<HttpRequest> seen;
};

std::string chunked_post(const std::string& path, const std::string& chunks,
                         const std::string& extra = "") {
    return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n" +
           extra + "\r\n" + chunks;
}

TEST(HttpHardening, OversizedHeaderIs431WithAClearBodyAndCloses) {
    HttpServerConfig hc;
    hc.max_header_bytes = 8 * 1024;
    RecordingServer s(hc);
    // Under the limit: answered.
    const RawReply fits = send_raw(
        s.port(),
        request_text("GET", "/fits", "", true, "X-Fill: " + std::string(6 * 1024, 'a') + "\r\n"));
    ASSERT_TRUE(fits.parsed) << fits.raw;
    EXPECT_EQ(fits.reply.status, 200);
    // One field over it, and many small ones over it.
    const RawReply one_big = send_raw(
        s.port(),
        request_text("GET", "/big", "", true, "X-Fill: " + std::string(64 * 1024, 'a') + "\r\n"));
    expect_error_and_close(one_big, 431, "request_header_too_large", "one 64 KiB field");
    std::string many;
    for (int i = 0; i < 1000; ++i) many += "X-Field-" + std::to_string(i) + ": value\r\n";
    const RawReply many_small = send_raw(s.port(), request_text("GET", "/many", "", true, many));
    expect_error_and_close(many_small, 431, "request_header_too_large", "1000 small fields");
    EXPECT_NE(one_big.reply.body.find("8192 bytes"), std::string::npos)
        << "the message names the limit: " << one_big.reply.body;
    EXPECT_FALSE(s.saw_target("/big"));
    EXPECT_FALSE(s.saw_target("/many"));
    // The default limit (64 KiB) holds too.
    RecordingServer defaults;
    expect_error_and_close(
        send_raw(defaults.port(), request_text("GET", "/big", "", true,
                                               "X-Fill: " + std::string(100 * 1024, 'a') + "\r\n")),
        431, "request_header_too_large", "100 KiB against the default limit");
}

TEST(HttpHardening, OversizedBodyReachesTheHandlerAsTooLargeForContentLengthAndChunked) {
    HttpServerConfig hc;
    hc.max_body_bytes = 4096;
    RecordingServer s(hc);
    const std::string big(64 * 1024, 'b');
    const RawReply by_length =
        send_raw(s.port(), request_text("POST", "/length", big, /*close=*/false));
    ASSERT_TRUE(by_length.parsed) << by_length.raw;
    EXPECT_EQ(by_length.reply.status, 413);
    EXPECT_TRUE(by_length.closed) << "a body left unread ends the connection";

    std::string chunks;  // four chunks of 16 KiB: the first already passes the limit
    for (int i = 0; i < 4; ++i) chunks += "4000\r\n" + std::string(16 * 1024, 'c') + "\r\n";
    const RawReply by_chunks = send_raw(s.port(), chunked_post("/chunks", chunks + "0\r\n\r\n"));
    ASSERT_TRUE(by_chunks.parsed) << by_chunks.raw;
    EXPECT_EQ(by_chunks.reply.status, 413);
    EXPECT_TRUE(by_chunks.closed);
    std::string small_chunks;  // many chunks, each under the limit, that add up past it
    for (int i = 0; i < 64; ++i) small_chunks += "400\r\n" + std::string(1024, 'd') + "\r\n";
    const RawReply by_sum = send_raw(s.port(), chunked_post("/sum", small_chunks + "0\r\n\r\n"));
    ASSERT_TRUE(by_sum.parsed) << by_sum.raw;
    EXPECT_EQ(by_sum.reply.status, 413);
    EXPECT_TRUE(by_sum.closed);

    for (const auto& r : s.requests()) {
        EXPECT_TRUE(r.body_too_large) << r.target;
        EXPECT_TRUE(r.body.empty()) << r.target << ": the part read is dropped";
    }
    EXPECT_EQ(s.requests().size(), 3u);
    // At the limit exactly: read whole.
    const RawReply at_limit =
        send_raw(s.port(), request_text("POST", "/at", std::string(4096, 'e')));
    ASSERT_TRUE(at_limit.parsed) << at_limit.raw;
    EXPECT_EQ(at_limit.reply.status, 200);
    EXPECT_EQ(at_limit.reply.json_body()["body"].get<std::string>().size(), 4096u);
}

TEST(HttpHardening, A413SentBeforeALargeBodyEndsReachesTheClientStillSendingIt) {
    // The answer goes out after the header; the client is still sending 4 MiB.
    // Closing on unread bytes would reset the connection and could destroy the
    // answer before the client reads it: the server drains the rest first.
    HttpServerConfig hc;
    hc.max_body_bytes = 4096;
    RecordingServer s(hc);
    for (int i = 0; i < 3; ++i) {
        const RawReply r =
            send_raw(s.port(), request_text("POST", "/upload", std::string(4 << 20, 'u')));
        ASSERT_TRUE(r.parsed) << i << ": " << r.raw.size() << " bytes: " << r.raw;
        EXPECT_EQ(r.reply.status, 413) << i;
        EXPECT_TRUE(r.closed) << i;
    }
}

TEST(HttpHardening, AHeaderTrickledAByteAtATimeIsCutOffWhileOthersAreServed) {
    HttpServerConfig hc;
    hc.io_threads = 1;  // the trickle must not hold the one I/O thread either
    hc.idle_timeout_s = 60;
    hc.header_timeout_ms = 500;
    RecordingServer s(hc);
    const int fd = connect_loopback(s.port());
    ASSERT_GE(fd, 0);
    const std::string header =
        "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + std::string(400, 'p') + "\r\n\r\n";
    std::atomic<bool> trickling{true};
    std::atomic<int> others_ok{0}, others_bad{0};
    std::thread others([&] {
        for (int i = 0; i < 200 && trickling.load(); ++i) {
            const RawReply r = send_raw(s.port(), request_text("GET", "/other", ""));
            (r.parsed && r.reply.status == 200 ? others_ok : others_bad).fetch_add(1);
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    });
    // One byte every 50 ms: the whole header would take over 20 s; the server's
    // idle timeout (60 s) would never end it in time.
    const auto start = Clock::now();
    RawReply got;
    for (size_t i = 0; i < header.size() && Clock::now() - start < std::chrono::seconds(15); ++i) {
        if (::send(fd, header.data() + i, 1, MSG_NOSIGNAL) != 1) break;  // already closed
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) > 0) break;  // an answer or the end of the stream
    }
    got = read_until_closed(fd, std::chrono::seconds(5));
    const auto cut_after = Clock::now() - start;
    ::close(fd);
    trickling.store(false);
    others.join();
    EXPECT_TRUE(got.closed)
        << "still open after "
        << std::chrono::duration_cast<std::chrono::milliseconds>(cut_after).count() << " ms";
    EXPECT_LT(cut_after, std::chrono::seconds(15))
        << "cut off by the header timeout, not the idle timeout";
    expect_error_and_close(got, 408, "request_timeout", "a trickled header");
    EXPECT_FALSE(s.saw_target("/slow"));
    EXPECT_GT(others_ok.load(), 0);
    EXPECT_EQ(others_bad.load(), 0) << "other clients were answered meanwhile";
}

TEST(HttpHardening, TheHeaderTimeoutStartsAtAcceptThenAtEachRequestsFirstByte) {
    HttpServerConfig hc;
    hc.idle_timeout_s = 60;
    hc.header_timeout_ms = 300;
    RecordingServer s(hc);
    // A keep-alive connection idles between requests past the header timeout.
    const int kept = connect_loopback(s.port());
    ASSERT_GE(kept, 0);
    for (int i = 0; i < 2; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        send_all(kept, request_text("GET", "/kept", "", /*close=*/false));
        Reply r;
        std::string raw;
        char buf[4096];
        const auto until = Clock::now() + std::chrono::seconds(10);
        while (parse_reply(raw, r) == 0 && Clock::now() < until) {
            const ssize_t n = ::recv(kept, buf, sizeof buf, 0);
            if (n <= 0) break;
            raw.append(buf, static_cast<size_t>(n));
        }
        EXPECT_EQ(r.status, 200) << "request " << i << ": " << raw;
    }
    ::close(kept);
    // A new connection that says nothing is closed, without an answer.
    const int silent = connect_loopback(s.port());
    ASSERT_GE(silent, 0);
    const auto start = Clock::now();
    const RawReply r = read_until_closed(silent, std::chrono::seconds(15));
    ::close(silent);
    EXPECT_TRUE(r.closed) << "a silent new connection is closed by the header timeout";
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(15));
    EXPECT_TRUE(r.raw.empty()) << r.raw;
}

TEST(HttpHardening, InvalidChunkedBodyIs400AndCloses) {
    RecordingServer s;
    const std::vector<std::pair<std::string, std::string>> bodies = {
        {"zz\r\nhello\r\n0\r\n\r\n", "a size that is not hex"},
        {"5\r\nhelloXY0\r\n\r\n", "no CRLF after the data"},
        {"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "a size past 64 bits"},
        {"5;=bad\r\nhello\r\n0\r\n\r\n", "a malformed chunk extension"},
        {"-5\r\nhello\r\n0\r\n\r\n", "a negative size"}};
    for (const auto& [body, what] : bodies) {
        const RawReply r = send_raw(s.port(), chunked_post("/chunked", body));
        expect_error_and_close(r, 400, "invalid_chunked_body", what);
    }
    EXPECT_FALSE(s.saw_target("/chunked"));
    // A well-formed one still works.
    const RawReply ok = send_raw(
        s.port(),
        chunked_post("/fine", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "Connection: close\r\n"));
    ASSERT_TRUE(ok.parsed) << ok.raw;
    EXPECT_EQ(ok.reply.status, 200);
    EXPECT_EQ(ok.reply.json_body()["body"], "hello world");
}

TEST(HttpHardening, MalformedRequestLineIs400AndCloses) {
    RecordingServer s;
    const std::vector<std::pair<std::string, std::string>> requests = {
        {"this is not http\r\n\r\n", "words"},
        {"GET /\r\nHost: x\r\n\r\n", "no version"},
        {"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", "a fourth word"},
        {"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", "a space in the target"},
        {"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", "a bad character in the method"},
        {"GET / HTTX/1.1\r\nHost: x\r\n\r\n", "not HTTP"},
        {" / HTTP/1.1\r\nHost: x\r\n\r\n", "no method"}};
    for (const auto& [request, what] : requests)
        expect_error_and_close(send_raw(s.port(), request), 400, "invalid_request_line", what);
    EXPECT_TRUE(s.requests().empty());
    // A malformed field is 400 too.
    expect_error_and_close(send_raw(s.port(), "GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"),
                           400, "invalid_request", "a field without a colon");
    EXPECT_TRUE(s.requests().empty());
}

TEST(HttpHardening, AmbiguousBodyLengthIs400AndNothingSmuggledIsServed) {
    RecordingServer s;
    // Each puts a second request where one reading of the body length ends.
    const std::string smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string chunked_then_smuggled = "0\r\n\r\n" + smuggled;
    struct Case {
        std::string fields;
        std::string body;
        int status;
        std::string code;
        std::string what;
    };
    const std::vector<Case> cases = {
        {"Content-Length: " + std::to_string(chunked_then_smuggled.size()) +
             "\r\nTransfer-Encoding: chunked\r\n",
         chunked_then_smuggled, 400, "ambiguous_body_length",
         "Content-Length, then Transfer-Encoding"},
        {"Transfer-Encoding: chunked\r\nContent-Length: " +
             std::to_string(chunked_then_smuggled.size()) + "\r\n",
         chunked_then_smuggled, 400, "ambiguous_body_length",
         "Transfer-Encoding, then Content-Length"},
        {"Content-Length: 0\r\nContent-Length: " + std::to_string(smuggled.size()) + "\r\n",
         smuggled, 400, "ambiguous_body_length", "two different Content-Length fields"},
        {"Content-Length: 0, " + std::to_string(smuggled.size()) + "\r\n", smuggled, 400,
         "ambiguous_body_length", "two different lengths in one field"},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", chunked_then_smuggled, 400,
         "ambiguous_body_length", "Transfer-Encoding twice"},
        {"Transfer-Encoding: gzip\r\nContent-Length: " + std::to_string(smuggled.size()) + "\r\n",
         smuggled, 400, "invalid_transfer_encoding",
         "a coding that is not chunked, with a Content-Length"},
        {"Transfer-Encoding: chunked, gzip\r\n", chunked_then_smuggled, 400,
         "invalid_transfer_encoding", "chunked not last"},
        {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", chunked_then_smuggled, 501,
         "unsupported_transfer_encoding", "gzip, then chunked in a second field"},
        {"Transfer-Encoding: gzip, chunked\r\n", chunked_then_smuggled, 501,
         "unsupported_transfer_encoding", "gzip and chunked"}};
    for (const Case& c : cases) {
        const RawReply r =
            send_raw(s.port(), "POST /first HTTP/1.1\r\nHost: x\r\n" + c.fields + "\r\n" + c.body);
        expect_error_and_close(r, c.status, c.code, c.what);
    }
    EXPECT_FALSE(s.saw_target("/smuggled"));
    EXPECT_FALSE(s.saw_target("/first"));
    // The same length twice is one length.
    const RawReply same = send_raw(s.port(),
                                   "POST /same HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   "Content-Length: 2\r\nContent-Length: 2\r\n\r\nok");
    ASSERT_TRUE(same.parsed) << same.raw;
    EXPECT_EQ(same.reply.status, 200);
}

TEST(HttpHardening, AfterRefusingOneClientTheServerServesTheNext) {
    HttpServerConfig hc;
    hc.io_threads = 1;
    hc.max_connections = 2;  // a refused connection must give its slot back
    RecordingServer s(hc);
    for (int i = 0; i < 20; ++i) {
        const RawReply bad =
            send_raw(s.port(), i % 2 ? "nonsense\r\n\r\n" : chunked_post("/x", "zz\r\n"));
        ASSERT_TRUE(bad.parsed) << i << ": " << bad.raw;
        EXPECT_EQ(bad.reply.status, 400) << i;
    }
    const RawReply good = send_raw(s.port(), request_text("GET", "/good", ""));
    ASSERT_TRUE(good.parsed) << good.raw;
    EXPECT_EQ(good.reply.status, 200);
}

// The OpenAI routes with one key, on a random-weight model (nothing from ../shared).
struct KeyedRoutes {
    explicit KeyedRoutes(engine::Model& model, size_t max_body = 1 << 20)
        : keys(make_keys()),
          limiter(keys, clock),
          scheduler(model, SchedulerConfig{}, SystemClock::instance(), &metrics),
          routes(model, scheduler, metrics, SystemClock::instance(), config(), nullptr, nullptr,
                 {&keys, &limiter}) {
        HttpServerConfig hc;
        hc.port = 0;
        hc.max_body_bytes = max_body;
        auto s = HttpServer::start(hc, [this](const HttpRequest& r) { return routes.handle(r); });
        EXPECT_TRUE(s.ok());
        server = std::move(*s);
    }
    ~KeyedRoutes() {
        server->stop();
        scheduler.stop();
    }
    static ApiKeyTable make_keys() {
        auto k = parse_api_key_spec("sha256=" + sha256_hex("key-a") + ",tenant=a");
        EXPECT_TRUE(k.ok());
        auto t = ApiKeyTable::create({*k});
        EXPECT_TRUE(t.ok());
        return std::move(*t);
    }
    static OpenAiRoutesConfig config() {
        OpenAiRoutesConfig c;
        c.model_id = "tiny";
        return c;
    }
    uint16_t port() const { return server->port(); }

    ManualClock clock;
    ApiKeyTable keys;
    RateLimiter limiter;
    ServeMetrics metrics;
    Scheduler scheduler;  // never started: no test here generates
    OpenAiRoutes routes;
    std::unique_ptr<HttpServer> server;
};

TEST(HttpHardening, TwoAuthorizationHeadersAreRefusedWith400) {
    auto model = tiny_chatml_model("http_hardening_auth.gguf");
    ASSERT_NE(model, nullptr);
    KeyedRoutes s(*model);
    const std::string good = "Authorization: Bearer key-a\r\n",
                      bad = "Authorization: Bearer key-b\r\n";
    const std::vector<std::pair<std::string, std::string>> doubled = {
        {good + bad, "the good key first"},
        {bad + good, "the good key second"},
        {good + good, "the same good key twice"},
        {good + "authorization: Bearer key-b\r\n", "the second in lower case"}};
    for (const auto& [headers, what] : doubled) {
        const RawReply r = send_raw(s.port(), request_text("GET", "/v1/models", "", true, headers));
        expect_error_and_close(r, 400, "duplicate_authorization", what);
        EXPECT_EQ(r.reply.body.find("key-"), std::string::npos)
            << "no key echoed: " << r.reply.body;
    }
    // One good key still works; one bad key is still 401.
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/models", "", good).status, 200);
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/models", "", bad).status, 401);
}

TEST(HttpHardening, OpenAiRoutesAnswer413ForContentLengthAndChunkedBodiesOverTheLimit) {
    auto model = tiny_chatml_model("http_hardening_413.gguf");
    ASSERT_NE(model, nullptr);
    KeyedRoutes s(*model, 4096);
    const std::string key = "Authorization: Bearer key-a\r\n";
    const std::string big = R"({"prompt":")" + std::string(64 * 1024, 'a') + R"("})";
    expect_error_and_close(
        send_raw(s.port(), request_text("POST", "/v1/completions", big, true, key)), 413,
        "request_too_large", "Content-Length over the limit");
    std::string chunks;
    for (size_t off = 0; off < big.size(); off += 1000) {
        const std::string part = big.substr(off, 1000);
        char size[16];
        std::snprintf(size, sizeof size, "%zx", part.size());
        chunks += std::string(size) + "\r\n" + part + "\r\n";
    }
    expect_error_and_close(
        send_raw(s.port(), chunked_post("/v1/completions", chunks + "0\r\n\r\n", key)), 413,
        "request_too_large", "a chunked body over the limit");
}

}  // namespace
}  // namespace assistd::serve
