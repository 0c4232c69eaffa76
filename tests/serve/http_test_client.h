#pragma once
// Shared by the serve tests: a small blocking HTTP/1.1 client over loopback
// sockets, an SSE reader, the engine's plain greedy loop as the reference,
// and a real server (scheduler + routes + HttpServer) on an ephemeral port.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/clock.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/openai_routes.h"
#include "serve/scheduler.h"

namespace assistd::serve::test_support {

inline const std::string kStoriesModelPath = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

// Loads stories260K once per test suite (with room for kMaxSequences
// sequences); every test of the suite skips when ../shared is absent.
template <size_t kMaxSequences>
class StoriesModelTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!std::filesystem::exists(kStoriesModelPath)) return;
        engine::ModelParams p;
        p.path = kStoriesModelPath;
        p.n_threads = 2;
        p.max_sequences = kMaxSequences;
        auto m = engine::Model::load(p);
        ASSERT_TRUE(m.ok());
        model_ = std::move(*m).release();
    }
    static void TearDownTestSuite() {
        delete model_;
        model_ = nullptr;
    }
    void SetUp() override {
        if (!model_) GTEST_SKIP() << "no " << kStoriesModelPath;
    }
    static inline engine::Model* model_ = nullptr;
};

// A model with two compute threads; null (and a test failure) when it cannot load.
std::unique_ptr<engine::Model> load_model(const std::string& path, size_t max_sequences = 16,
                                          size_t kv_cache_tokens = 0);

// A random-weight "tiny-llama" written under the test's temp dir as `file_name`: its
// synthetic vocabulary has <|im_start|> and <|im_end|> as control tokens and a ChatML
// template, so it needs nothing from ../shared.
std::unique_ptr<engine::Model> tiny_chatml_model(const std::string& file_name, size_t max_sequences = 4);

// The ChatML prompt ids built by hand: the template's control tokens around the
// plain-text encoding of every "role\ncontent" (what message text must become).
std::vector<engine::TokenId> chatml_ids_with_text_content(const engine::Tokenizer& tok,
                                                          const std::vector<engine::ChatMessage>& messages);

int connect_loopback(uint16_t port);
void send_all(int fd, const std::string& data);
// extra_headers: complete "Name: value\r\n" lines.
std::string request_text(const std::string& method, const std::string& path,
                         const std::string& body, bool close = true,
                         const std::string& extra_headers = "");

struct Reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;                            // de-chunked
    nlohmann::json json_body() const { return nlohmann::json::parse(body, nullptr, false); }
};

// Parses one response from the front of `raw`; returns the bytes it used (0: incomplete).
size_t parse_reply(const std::string& raw, Reply& out);
std::string read_to_eof(int fd);
Reply exchange(uint16_t port, const std::string& method, const std::string& path,
               const std::string& body = "", const std::string& extra_headers = "");

// Tokens per stream so that `streams` concurrent streams of that length finish
// within `seconds` on this machine, as the server at `port` decodes now (a
// sanitizer build or a slow machine decodes several times slower): measured
// with a short concurrent burst of completions, clamped to [min_tokens, max_tokens].
size_t stream_tokens_within(uint16_t port, size_t streams, double seconds, size_t min_tokens,
                            size_t max_tokens);

// The concatenated content of an SSE chat or completion stream; checks the framing.
std::string sse_text(const std::string& body, bool chat, nlohmann::json* usage = nullptr,
                     std::string* finish = nullptr);

// The reference: greedy decoding with the engine alone, cut at the first stop string.
std::string plain_greedy_text(engine::Model& model, const std::vector<engine::TokenId>& prompt,
                              size_t max_tokens, const std::vector<std::string>& stops);

struct TestServer {
    TestServer(engine::Model& model, SchedulerConfig sc, OpenAiRoutesConfig rc,
               bool start_scheduler = true, size_t max_body = 1 << 20,
               state::SessionStore* sessions = nullptr, const StaticFiles* web = nullptr)
        : scheduler(model, sc, SystemClock::instance(), &metrics),
          routes(model, scheduler, metrics, SystemClock::instance(), rc, sessions, web) {
        if (start_scheduler) scheduler.start();
        HttpServerConfig hc;
        hc.port = 0;
        hc.io_threads = 2;
        hc.max_body_bytes = max_body;
        auto s = HttpServer::start(hc, [this](const HttpRequest& r) { return routes.handle(r); });
        EXPECT_TRUE(s.ok());
        server = std::move(*s);
    }
    ~TestServer() {
        server->stop();
        scheduler.stop();
    }
    uint16_t port() const { return server->port(); }

    ServeMetrics metrics;
    Scheduler scheduler;
    OpenAiRoutes routes;
    std::unique_ptr<HttpServer> server;
};

}  // namespace assistd::serve::test_support
