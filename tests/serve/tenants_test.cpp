// API keys, tenants and limits over HTTP: a real server on an ephemeral
// loopback port, a real session store, and the rate limiter on a ManualClock
// so its windows pass only when the test says so.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "http_test_client.h"
#include "serve/auth.h"
#include "serve/rate_limit.h"
#include "serve/sessions.h"
#include "serve/static_files.h"

namespace assistd::serve {
namespace {

using engine::Precision;
using nlohmann::json;
using namespace test_support;

const std::string kChat = "/v1/chat/completions";

OpenAiRoutesConfig routes_config() {
    OpenAiRoutesConfig c;
    c.model_id = "stories260K";
    return c;
}

std::string auth(const std::string& key) { return "Authorization: Bearer " + key + "\r\n"; }

std::string turn(const std::string& user, size_t max_tokens, const std::string& session_id = "",
                 const std::string& precision = "") {
    json j = {{"messages", {{{"role", "user"}, {"content", user}}}}, {"max_tokens", max_tokens}, {"temperature", 0}};
    if (!session_id.empty()) j["session_id"] = session_id;
    if (!precision.empty()) j["precision"] = precision;
    return j.dump();
}

void expect_error(const Reply& r, int status, const std::string& code, const std::string& what) {
    EXPECT_EQ(r.status, status) << what << ": " << r.body;
    const json j = r.json_body();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": " << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string()) << what;
    EXPECT_TRUE(j["error"]["type"].is_string()) << what;
    EXPECT_EQ(j["error"]["code"], code) << what << ": " << r.body;
}

// The value of one series in a Prometheus text body; -1 when absent.
double metric(const std::string& body, const std::string& series) {
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);)
        if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ')
            return std::stod(line.substr(series.size() + 1));
    return -1;
}

ApiKeyTable keys_of(const std::vector<std::pair<std::string, std::string>>& key_and_fields) {
    std::vector<ApiKeyConfig> keys;
    for (const auto& [key, fields] : key_and_fields) {
        auto k = parse_api_key_spec("sha256=" + sha256_hex(key) + "," + fields);
        EXPECT_TRUE(k.ok()) << fields;
        keys.push_back(*k);
    }
    auto t = ApiKeyTable::create(std::move(keys));
    EXPECT_TRUE(t.ok());
    return std::move(*t);
}

// A server with keys: its own ManualClock drives the rate limits; the
// scheduler runs on the system clock at FP32 unless a request pins another.
struct KeyedServer {
    KeyedServer(engine::Model& model, ApiKeyTable table, OpenAiRoutesConfig rc = routes_config(),
                const StaticFiles* web = nullptr, size_t max_body = 1 << 20)
        : keys(std::move(table)),
          limiter(keys, clock),
          sessions(open_store()),
          scheduler(model, fp32(), SystemClock::instance(), &metrics),
          routes(model, scheduler, metrics, SystemClock::instance(), rc, &sessions->store(), web, {&keys, &limiter}) {
        scheduler.start();
        HttpServerConfig hc;
        hc.port = 0;
        hc.io_threads = 2;
        hc.max_body_bytes = max_body;
        auto s = HttpServer::start(hc, [this](const HttpRequest& r) { return routes.handle(r); });
        EXPECT_TRUE(s.ok());
        server = std::move(*s);
    }
    ~KeyedServer() {
        server->stop();
        scheduler.stop();
    }
    static SchedulerConfig fp32() {
        SchedulerConfig c;
        c.fixed_precision = Precision::kFP32;
        return c;
    }
    static std::unique_ptr<ServerSessionStore> open_store() {
        auto s = ServerSessionStore::open("", SystemClock::instance());
        EXPECT_TRUE(s.ok());
        return std::move(*s);
    }
    uint16_t port() const { return server->port(); }
    std::string metrics_text() { return exchange(port(), "GET", "/metrics").body; }

    ManualClock clock;
    ApiKeyTable keys;
    RateLimiter limiter;
    std::unique_ptr<ServerSessionStore> sessions;
    ServeMetrics metrics;
    Scheduler scheduler;
    OpenAiRoutes routes;
    std::unique_ptr<HttpServer> server;
};

class Tenants : public StoriesModelTest<4> {};

TEST_F(Tenants, MissingWrongOrMalformedKeyIs401LikeOpenAi) {
    const std::filesystem::path web_dir = std::filesystem::path(ASSISTD_SOURCE_DIR) / "web";
    StaticFiles web(web_dir);
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}}), routes_config(), &web);
    const std::vector<std::pair<std::string, std::string>> routes = {
        {"GET", "/v1/models"}, {"GET", "/v1/sessions"}, {"GET", "/v1/sessions/x"}, {"GET", "/v1/sessions/x?local=true"},
        {"POST", kChat},
        {"POST", "/v1/completions"}, {"GET", "/v1/nothing-here"}};
    const std::vector<std::pair<std::string, std::string>> bad_headers = {
        {"", "no header"},
        {auth("key-b"), "unknown key"},
        {auth(sha256_hex("key-a")), "the key's hash instead of the key"},
        {"Authorization: Basic a2V5LWE6\r\n", "Basic scheme"},
        {"Authorization: key-a\r\n", "no scheme"},
        {"Authorization: Bearer\r\n", "Bearer without a key"},
        {"Authorization: Bearer key-a extra\r\n", "two words"}};
    for (const auto& [method, path] : routes) {
        for (const auto& [header, what] : bad_headers) {
            const Reply r = exchange(s.port(), method, path, method == "POST" ? turn("Hi", 2) : "", header);
            expect_error(r, 401, "invalid_api_key", method + " " + path + ", " + what);
            EXPECT_EQ(r.json_body()["error"]["type"], "invalid_request_error");
            EXPECT_EQ(r.headers.count("www-authenticate") ? r.headers.at("www-authenticate") : "", "Bearer");
            EXPECT_EQ(r.body.find("key-"), std::string::npos) << "the key is never echoed: " << r.body;
        }
    }
    // The key in another case of the scheme word works; the probes, /metrics and the chat page need none.
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/models", "", "Authorization: bearer key-a\r\n").status, 200);
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/models", "", auth("key-a")).status, 200);
    for (const char* open : {"/healthz", "/readyz", "/metrics", "/", "/app.js"})
        EXPECT_EQ(exchange(s.port(), "GET", open).status, 200) << open;
    EXPECT_EQ(metric(s.metrics_text(), "assistd_http_requests_total{route=\"unauthenticated\",status=\"401\"}"),
              static_cast<double>(routes.size() * bad_headers.size()));
}

TEST_F(Tenants, ATenantSeesAndUsesOnlyItsOwnSessions) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}, {"key-a2", "tenant=a"}, {"key-b", "tenant=b"}}));
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hello", 4, "a-1"), auth("key-a")).status, 200);
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hi there", 4, "b-1"), auth("key-b")).status, 200);

    // Another key of the same tenant shares its sessions.
    const Reply same = exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-a2"));
    ASSERT_EQ(same.status, 200) << same.body;
    EXPECT_EQ(same.json_body()["messages"].size(), 2u);

    // Tenant b: a's session answers exactly like one that does not exist.
    const Reply foreign = exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-b"));
    const Reply missing = exchange(s.port(), "GET", "/v1/sessions/zz-9", "", auth("key-b"));
    expect_error(foreign, 404, "session_not_found", "GET another tenant's session");
    expect_error(missing, 404, "session_not_found", "GET a missing session");
    std::string foreign_body = foreign.body;
    foreign_body.replace(foreign_body.find("a-1"), 3, "zz-9");
    EXPECT_EQ(foreign_body, missing.body);
    // This node's own copy (?local=true) answers the same for both, too.
    const Reply foreign_local = exchange(s.port(), "GET", "/v1/sessions/a-1?local=true", "", auth("key-b"));
    const Reply missing_local = exchange(s.port(), "GET", "/v1/sessions/zz-9?local=true", "", auth("key-b"));
    expect_error(foreign_local, 404, "session_not_found", "local GET of another tenant's session");
    foreign_body = foreign_local.body;
    foreign_body.replace(foreign_body.find("a-1"), 3, "zz-9");
    EXPECT_EQ(foreign_body, missing_local.body);
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/sessions/a-1?local=true", "", auth("key-a2")).status, 200);
    expect_error(exchange(s.port(), "DELETE", "/v1/sessions/a-1", "", auth("key-b")), 404, "session_not_found",
                 "DELETE another tenant's session");
    // A chat naming a's id starts b's own session of that id, as an unused id would, and continues it.
    const Reply own = exchange(s.port(), "POST", kChat, turn("Let me in", 4, "a-1"), auth("key-b"));
    ASSERT_EQ(own.status, 200) << own.body;
    EXPECT_EQ(own.json_body()["session_id"], "a-1");
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Still me", 4), auth("key-b") + "X-Session-Id: a-1\r\n").status,
              200);
    const Reply bs = exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-b"));
    ASSERT_EQ(bs.status, 200) << bs.body;
    ASSERT_EQ(bs.json_body()["messages"].size(), 4u);
    EXPECT_EQ(bs.json_body()["messages"][0]["content"], "Let me in");
    EXPECT_EQ(bs.json_body()["messages"][2]["content"], "Still me");

    // Nothing of b's reached a's session, and it is still there.
    const Reply after = exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-a"));
    ASSERT_EQ(after.status, 200) << after.body;
    EXPECT_EQ(after.json_body()["messages"].size(), 2u);
    EXPECT_EQ(after.json_body()["messages"][0]["content"], "Hello");

    // Each list holds only the caller's own.
    auto ids = [&](const std::string& key) {
        std::vector<std::string> out;
        const Reply list = exchange(s.port(), "GET", "/v1/sessions", "", auth(key));
        EXPECT_EQ(list.status, 200) << list.body;
        const json body = list.json_body();
        for (const auto& item : body["data"]) out.push_back(item["id"]);
        return out;
    };
    EXPECT_EQ(ids("key-a"), std::vector<std::string>{"a-1"});
    EXPECT_EQ(ids("key-a2"), std::vector<std::string>{"a-1"});
    EXPECT_EQ(ids("key-b"), (std::vector<std::string>{"a-1", "b-1"}));

    // The owner can delete it; then it is gone for both.
    EXPECT_EQ(exchange(s.port(), "DELETE", "/v1/sessions/a-1", "", auth("key-a")).status, 200);
    expect_error(exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-a")), 404, "session_not_found",
                 "GET after the owner deleted it");
    EXPECT_TRUE(ids("key-a").empty());
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/sessions/a-1", "", auth("key-b")).json_body()["messages"].size(), 4u)
        << "b's session of that id is b's own";

    const std::string m = s.metrics_text();
    EXPECT_GE(metric(m, "assistd_tenant_requests_total{status=\"200\",tenant=\"a\"}"), 5);
    EXPECT_EQ(metric(m, "assistd_tenant_requests_total{status=\"404\",tenant=\"b\"}"), 5);  // 2 of them local reads
}

// The same id chosen by two tenants is two conversations; a third tenant
// finds that id exactly as unused as one nobody chose.
TEST_F(Tenants, TwoTenantsUsingOneSessionIdHaveTwoConversations) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}, {"key-b", "tenant=b"}, {"key-c", "tenant=c"}}));
    auto chat = [&](const std::string& key, const std::string& user, const std::string& id) {
        const Reply r = exchange(s.port(), "POST", kChat, turn(user, 4, id), auth(key));
        EXPECT_EQ(r.status, 200) << key << " " << user << ": " << r.body;
        if (r.status == 200) {
            EXPECT_EQ(r.json_body()["session_id"], id);
        }
    };
    chat("key-a", "Hello from a", "shared");
    chat("key-b", "Greetings from b", "shared");
    chat("key-a", "And a again", "shared");
    const Reply header_turn =
        exchange(s.port(), "POST", kChat, turn("b goes on", 4), auth("key-b") + "X-Session-Id: shared\r\n");
    ASSERT_EQ(header_turn.status, 200) << header_turn.body;

    // Each tenant reads its own conversation, whole, and nothing of the other's.
    auto user_messages = [&](const std::string& key, const std::string& id) {
        std::vector<std::string> out;
        const Reply r = exchange(s.port(), "GET", "/v1/sessions/" + id, "", auth(key));
        EXPECT_EQ(r.status, 200) << key << ": " << r.body;
        if (r.status != 200) return out;
        const json messages = r.json_body()["messages"];
        for (size_t i = 0; i < messages.size(); ++i) {
            EXPECT_EQ(messages[i]["role"], i % 2 == 0 ? "user" : "assistant") << key << " message " << i;
            if (i % 2 == 0) out.push_back(messages[i]["content"]);
        }
        EXPECT_EQ(messages.size(), 2 * out.size()) << key << ": every turn has its answer";
        return out;
    };
    EXPECT_EQ(user_messages("key-a", "shared"), (std::vector<std::string>{"Hello from a", "And a again"}));
    EXPECT_EQ(user_messages("key-b", "shared"), (std::vector<std::string>{"Greetings from b", "b goes on"}));
    for (const char* key : {"key-a", "key-b"}) {
        const Reply list = exchange(s.port(), "GET", "/v1/sessions", "", auth(key));
        ASSERT_EQ(list.status, 200) << list.body;
        ASSERT_EQ(list.json_body()["data"].size(), 1u) << key << ": " << list.body;
        EXPECT_EQ(list.json_body()["data"][0]["id"], "shared");
        EXPECT_EQ(list.json_body()["data"][0]["message_count"], 4);
    }

    // Tenant c: "shared" (used by a and b) and "unused" (by nobody) answer alike, byte for byte.
    auto as_unused = [](std::string body) {
        for (size_t at = body.find("shared"); at != std::string::npos; at = body.find("shared", at))
            body.replace(at, 6, "unused");
        return body;
    };
    for (const auto& [method, suffix] : std::vector<std::pair<std::string, std::string>>{
             {"GET", ""}, {"GET", "?local=true"}, {"DELETE", ""}}) {
        const Reply used = exchange(s.port(), method, "/v1/sessions/shared" + suffix, "", auth("key-c"));
        const Reply unused = exchange(s.port(), method, "/v1/sessions/unused" + suffix, "", auth("key-c"));
        expect_error(used, 404, "session_not_found", method + " another tenant's id" + suffix);
        EXPECT_EQ(as_unused(used.body), unused.body) << method << suffix;
    }
    const Reply c_list = exchange(s.port(), "GET", "/v1/sessions", "", auth("key-c"));
    EXPECT_EQ(c_list.json_body()["data"].size(), 0u) << c_list.body;
    // A chat with either id starts c's own session, holding only c's turn.
    chat("key-c", "c was here", "shared");
    chat("key-c", "c was here", "unused");
    EXPECT_EQ(user_messages("key-c", "shared"), std::vector<std::string>{"c was here"});
    EXPECT_EQ(user_messages("key-c", "unused"), std::vector<std::string>{"c was here"});
    EXPECT_EQ(user_messages("key-a", "shared").size(), 2u);
    EXPECT_EQ(user_messages("key-b", "shared").size(), 2u);

    // a deletes its session: b's stays; the id stays gone for a only.
    ASSERT_EQ(exchange(s.port(), "DELETE", "/v1/sessions/shared", "", auth("key-a")).status, 200);
    expect_error(exchange(s.port(), "GET", "/v1/sessions/shared", "", auth("key-a")), 404, "session_not_found",
                 "a's deleted session");
    expect_error(exchange(s.port(), "POST", kChat, turn("Back again", 4, "shared"), auth("key-a")), 404,
                 "session_not_found", "a chat in a's deleted session");
    EXPECT_EQ(user_messages("key-b", "shared"), (std::vector<std::string>{"Greetings from b", "b goes on"}));
    chat("key-b", "b still here", "shared");
    EXPECT_EQ(user_messages("key-b", "shared").size(), 3u);
}

// One tenant's turn in progress holds up that tenant's session only: another
// tenant's request with the same id is not told (409) that the id is in use.
TEST_F(Tenants, ABusySessionOfOneTenantDoesNotHoldUpAnothersSameId) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}, {"key-b", "tenant=b"}}));
    json long_turn = json::parse(turn("Tell me a story", 200, "busy"));
    long_turn["stream"] = true;
    long_turn["ignore_eos"] = true;  // runs for all 200 tokens
    const int fd = connect_loopback(s.port());
    ASSERT_GE(fd, 0);
    send_all(fd, request_text("POST", kChat, long_turn.dump(), true, auth("key-a")));
    std::string raw;
    char buf[4096];
    while (raw.find("data: {") == std::string::npos) {  // a's turn is running
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        raw.append(buf, static_cast<size_t>(n));
    }
    ASSERT_NE(raw.find("data: {"), std::string::npos) << raw;
    expect_error(exchange(s.port(), "POST", kChat, turn("Me too", 4, "busy"), auth("key-a")), 409, "session_busy",
                 "a's own second turn");
    const Reply b = exchange(s.port(), "POST", kChat, turn("Not busy for me", 4, "busy"), auth("key-b"));
    EXPECT_EQ(b.status, 200) << b.body;
    raw += read_to_eof(fd);
    ::close(fd);
}

// A state directory of an earlier version holds sessions under their bare id
// with the tenant in the document: they stay their tenant's, where they are.
TEST_F(Tenants, SessionsStoredByEarlierVersionsStayTheirTenants) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}, {"key-b", "tenant=b"}}));
    state::SessionStore& store = s.sessions->store();
    ASSERT_TRUE(store.create("old", "a", "from before").ok());  // as earlier versions wrote it
    ASSERT_TRUE(store.append_message("old", {"user", "asked before the upgrade"}).ok());
    ASSERT_TRUE(store.append_message("old", {"assistant", "answered before the upgrade"}).ok());

    const Reply a = exchange(s.port(), "GET", "/v1/sessions/old", "", auth("key-a"));
    ASSERT_EQ(a.status, 200) << a.body;
    EXPECT_EQ(a.json_body()["id"], "old");
    EXPECT_EQ(a.json_body()["messages"][0]["content"], "asked before the upgrade");
    const Reply listed = exchange(s.port(), "GET", "/v1/sessions", "", auth("key-a"));
    ASSERT_EQ(listed.json_body()["data"].size(), 1u) << listed.body;
    EXPECT_EQ(listed.json_body()["data"][0]["id"], "old");
    // b: not found, as an unused id, and a chat starts b's own.
    const Reply b = exchange(s.port(), "GET", "/v1/sessions/old", "", auth("key-b"));
    const Reply unused = exchange(s.port(), "GET", "/v1/sessions/new", "", auth("key-b"));
    expect_error(b, 404, "session_not_found", "b reads a's session of an earlier version");
    std::string b_body = b.body;
    b_body.replace(b_body.find("old"), 3, "new");
    EXPECT_EQ(b_body, unused.body);
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("b's own", 4, "old"), auth("key-b")).status, 200);

    // a's next turn continues the old session, under its old key.
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("asked after it", 4, "old"), auth("key-a")).status, 200);
    auto stored = store.get("old");
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(stored->messages.size(), 4u);
    EXPECT_EQ(stored->messages[2].content, "asked after it");
    const Reply b_after = exchange(s.port(), "GET", "/v1/sessions/old", "", auth("key-b"));
    ASSERT_EQ(b_after.status, 200) << b_after.body;
    ASSERT_EQ(b_after.json_body()["messages"].size(), 2u);
    EXPECT_EQ(b_after.json_body()["messages"][0]["content"], "b's own");
}

TEST_F(Tenants, RequestsPerMinuteLimitAnswers429ThenRecoversWhenTheClockMoves) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a,requests-per-minute=2"}, {"key-b", "tenant=b"}}));
    const Reply r1 = exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-a"));
    ASSERT_EQ(r1.status, 200) << r1.body;
    EXPECT_EQ(r1.headers.at("x-ratelimit-limit-requests"), "2");
    EXPECT_EQ(r1.headers.at("x-ratelimit-remaining-requests"), "1");
    EXPECT_EQ(r1.headers.at("x-ratelimit-reset-requests"), "30s");
    EXPECT_EQ(r1.headers.count("x-ratelimit-limit-tokens"), 0u) << "no token limit on this key";
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-a")).status, 200);

    const Reply limited = exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-a"));
    expect_error(limited, 429, "rate_limit_exceeded", "third request in the minute");
    EXPECT_EQ(limited.json_body()["error"]["type"], "requests");
    EXPECT_EQ(limited.headers.at("retry-after"), "30");
    EXPECT_EQ(limited.headers.at("x-ratelimit-remaining-requests"), "0");
    EXPECT_EQ(limited.headers.at("x-ratelimit-reset-requests"), "1m0s");
    // Other keys are not affected, and neither are the sessions routes.
    EXPECT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-b")).status, 200);
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/sessions", "", auth("key-a")).status, 200);

    s.clock.advance_ms(29'000);
    const Reply still = exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-a"));
    expect_error(still, 429, "rate_limit_exceeded", "one second early");
    EXPECT_EQ(still.headers.at("retry-after"), "1");
    s.clock.advance_ms(1'000);
    EXPECT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 2), auth("key-a")).status, 200);
    expect_error(exchange(s.port(), "POST", "/v1/completions", R"({"prompt":"Hi","max_tokens":2})", auth("key-a")),
                 429, "rate_limit_exceeded", "completions share the limit");

    const std::string m = s.metrics_text();
    EXPECT_EQ(metric(m, "assistd_rate_limited_total{limit=\"requests\",tenant=\"a\"}"), 3);
    EXPECT_EQ(metric(m, "assistd_rate_limited_total{limit=\"tokens\",tenant=\"a\"}"), 0);
    EXPECT_EQ(metric(m, "assistd_rate_limited_total{limit=\"requests\",tenant=\"b\"}"), 0);
    EXPECT_EQ(metric(m, "assistd_tenant_requests_total{status=\"429\",tenant=\"a\"}"), 3);
}

TEST_F(Tenants, TokensPerMinuteReserveMaxTokensAndSettleTheCompletion) {
    const auto& tok = model_->tokenizer();
    const std::string text = model_->chat_template().apply({{"user", "Hi"}}, true);
    const size_t prompt = tok.encode(text, tok.add_bos_default(), true).size();
    // Room for one prompt and one token more: of max_tokens 8 one is reserved
    // (all the bucket holds beside the prompt), and the rest of the completion
    // puts the bucket in debt when it settles.
    const size_t tpm = prompt + 1;
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a,tokens-per-minute=" + std::to_string(tpm)}}));
    const Reply r1 = exchange(s.port(), "POST", kChat, turn("Hi", 8), auth("key-a"));
    ASSERT_EQ(r1.status, 200) << r1.body;
    EXPECT_EQ(r1.headers.at("x-ratelimit-limit-tokens"), std::to_string(tpm));
    EXPECT_EQ(r1.headers.at("x-ratelimit-remaining-tokens"), "0") << "the prompt and the reservation were charged";
    const size_t completion = r1.json_body()["usage"]["completion_tokens"];
    ASSERT_GE(completion, 1u);

    const Reply limited = exchange(s.port(), "POST", kChat, turn("Hi", 8), auth("key-a"));
    expect_error(limited, 429, "rate_limit_exceeded", "the completion was charged too");
    EXPECT_EQ(limited.json_body()["error"]["type"], "tokens");
    // From 1 - completion up to prompt + 1 (the next prompt and its reservation), at tpm per minute.
    const double debt_s = static_cast<double>(prompt + completion) * 60.0 / static_cast<double>(tpm);
    const int retry = std::stoi(limited.headers.at("retry-after"));
    EXPECT_EQ(retry, static_cast<int>(std::ceil(debt_s - 1e-9))) << limited.headers.at("retry-after");
    s.clock.advance_ms(static_cast<int64_t>(retry) * 1000 - 1000);
    if (retry > 1)
        expect_error(exchange(s.port(), "POST", kChat, turn("Hi", 8), auth("key-a")), 429, "rate_limit_exceeded",
                     "a second early");
    s.clock.advance_ms(1000);
    EXPECT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 8), auth("key-a")).status, 200);

    // A prompt larger than a whole minute's tokens can never pass: no Retry-After.
    s.clock.advance_ms(60'000);
    const Reply huge = exchange(s.port(), "POST", kChat, turn("Once upon a time there was a little dog", 2), auth("key-a"));
    expect_error(huge, 429, "rate_limit_exceeded", "prompt over the whole limit");
    EXPECT_NE(huge.json_body()["error"]["message"].get<std::string>().find("Request too large"), std::string::npos);
    EXPECT_EQ(huge.headers.count("retry-after"), 0u);
    EXPECT_EQ(metric(s.metrics_text(), "assistd_rate_limited_total{limit=\"tokens\",tenant=\"a\"}"),
              retry > 1 ? 3 : 2);
}

TEST_F(Tenants, TheTenantDefaultPrecisionAppliesWhenTheRequestPinsNone) {
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}, {"key-b", "tenant=b,precision=fp16"}}));
    auto steps = [&](const char* p) {
        return metric(s.metrics_text(), std::string("assistd_decode_steps_total{precision=\"") + p + "\"}");
    };
    // The scheduler reports a step after its tokens went out, so a count may
    // trail the response by a moment: read until it holds still (bounded).
    auto settled_steps = [&](const char* p) {
        double v = steps(p);
        for (int i = 0; i < 50; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            const double w = steps(p);
            if (w == v) break;
            v = w;
        }
        return v;
    };
    ASSERT_EQ(steps("fp16"), 0);
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 4), auth("key-a")).status, 200);
    EXPECT_EQ(steps("fp16"), 0) << "tenant a has no default: the server's fp32";
    EXPECT_GT(steps("fp32"), 0);

    const double fp32_before = settled_steps("fp32");
    const Reply b = exchange(s.port(), "POST", kChat, turn("Hi", 4), auth("key-b"));
    ASSERT_EQ(b.status, 200) << b.body;
    EXPECT_GT(steps("fp16"), 0) << "tenant b's default ran the decode steps";
    EXPECT_EQ(steps("fp32"), fp32_before);

    const double fp16_before = settled_steps("fp16");
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hi", 4, "", "fp32"), auth("key-b")).status, 200);
    EXPECT_EQ(steps("fp16"), fp16_before) << "a pinned precision wins over the tenant's default";

    const std::string m = s.metrics_text();
    EXPECT_EQ(metric(m, "assistd_tenant_precision_requests_total{precision=\"policy\",tenant=\"a\"}"), 1);
    EXPECT_EQ(metric(m, "assistd_tenant_precision_requests_total{precision=\"fp16\",tenant=\"b\"}"), 1);
    EXPECT_EQ(metric(m, "assistd_tenant_precision_requests_total{precision=\"fp32\",tenant=\"b\"}"), 1);
}

TEST_F(Tenants, RequestSizeLimitsGiveClearErrors) {
    OpenAiRoutesConfig rc = routes_config();
    rc.max_messages = 2;
    rc.max_prompt_tokens = 12;
    KeyedServer s(*model_, keys_of({{"key-a", "tenant=a"}}), rc, nullptr, 2048);
    const json three = {{"messages",
                         {{{"role", "system"}, {"content", "Be brief"}},
                          {{"role", "user"}, {"content", "Hi"}},
                          {{"role", "user"}, {"content", "Hi again"}}}}};
    const Reply many = exchange(s.port(), "POST", kChat, three.dump(), auth("key-a"));
    expect_error(many, 400, "too_many_messages", "three messages, two allowed");
    EXPECT_EQ(many.json_body()["error"]["param"], "messages");
    EXPECT_NE(many.json_body()["error"]["message"].get<std::string>().find("at most 2"), std::string::npos);

    const Reply long_prompt = exchange(s.port(), "POST", "/v1/completions",
                                       R"({"prompt":"Once upon a time there was a little dog who liked to run","max_tokens":2})",
                                       auth("key-a"));
    expect_error(long_prompt, 400, "prompt_too_long", "prompt over max_prompt_tokens");
    EXPECT_EQ(long_prompt.json_body()["error"]["param"], "prompt");
    EXPECT_NE(long_prompt.json_body()["error"]["message"].get<std::string>().find("at most 12"), std::string::npos);

    const Reply big = exchange(s.port(), "POST", kChat, turn(std::string(4096, 'a'), 2), auth("key-a"));
    expect_error(big, 413, "request_too_large", "body over max_body_bytes");
    expect_error(exchange(s.port(), "POST", kChat, turn(std::string(4096, 'a'), 2)), 401, "invalid_api_key",
                 "a large body without a key is still 401");

    EXPECT_EQ(exchange(s.port(), "POST", "/v1/completions", R"({"prompt":"Once","max_tokens":2})", auth("key-a")).status,
              200);
}

TEST_F(Tenants, WithoutKeysTheServerStaysOpenAsTenantEmpty) {
    KeyedServer s(*model_, ApiKeyTable());
    ASSERT_EQ(exchange(s.port(), "POST", kChat, turn("Hello", 2, "open-1")).status, 200);
    // A header is ignored rather than refused.
    EXPECT_EQ(exchange(s.port(), "GET", "/v1/sessions/open-1", "", auth("anything")).status, 200);
    const Reply list = exchange(s.port(), "GET", "/v1/sessions");
    ASSERT_EQ(list.status, 200);
    ASSERT_EQ(list.json_body()["data"].size(), 1u);
    EXPECT_EQ(list.headers.count("x-ratelimit-limit-requests"), 0u);
    EXPECT_EQ(metric(s.metrics_text(), "assistd_tenant_requests_total{status=\"200\",tenant=\"\"}"), 3);
}

}  // namespace
}  // namespace assistd::serve
