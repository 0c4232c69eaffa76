// Prefix reuse seen from the API: a session's next turn reports the reused
// tokens as usage.prompt_tokens_details.cached_tokens (stream usage chunk
// too), answers exactly as a full prefill would, and /metrics counts it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http_test_client.h"
#include "serve/sessions.h"

namespace assistd::serve {
namespace {

using engine::Precision;
using engine::TokenId;
using nlohmann::json;
using namespace test_support;

SchedulerConfig fp32(bool prefix_cache = true) {
    SchedulerConfig c;
    c.fixed_precision = Precision::kFP32;
    c.prefix_cache = prefix_cache;
    return c;
}

OpenAiRoutesConfig routes_config() {
    OpenAiRoutesConfig c;
    c.model_id = "stories260K";
    return c;
}

std::string turn_body(const std::string& user, size_t max_tokens, bool stream, const std::string& session_id) {
    json j = {{"messages", {{{"role", "user"}, {"content", user}}}},
              {"max_tokens", max_tokens},
              {"temperature", 0},
              {"stream", stream},
              {"session_id", session_id}};
    if (stream) j["stream_options"] = {{"include_usage", true}};
    return j.dump();
}

size_t cached_tokens(const json& usage) { return usage.at("prompt_tokens_details").at("cached_tokens").get<size_t>(); }

// The value of an unlabelled metric in the Prometheus text; -1 when absent.
double metric(const std::string& text, const std::string& name) {
    const size_t at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + name.size() + 2));
}

class HttpPrefix : public StoriesModelTest<8> {
protected:
    std::vector<TokenId> prompt_of(const std::vector<engine::ChatMessage>& conversation) const {
        const std::string text = model_->chat_template().apply(conversation, true);
        return model_->tokenizer().encode(text, model_->tokenizer().add_bos_default(), true);
    }
    std::string greedy(const std::vector<engine::ChatMessage>& conversation, size_t max_tokens) const {
        return plain_greedy_text(*model_, prompt_of(conversation), max_tokens, model_->chat_template().stop_strings());
    }
};

TEST_F(HttpPrefix, SessionTurnsReportCachedTokensAndAnswerAsAFullPrefill) {
    auto store = ServerSessionStore::open("", SystemClock::instance());
    ASSERT_TRUE(store.ok()) << store.error().message;
    TestServer s(*model_, fp32(), routes_config(), true, 1 << 20, &(*store)->store());
    const std::string path = "/v1/chat/completions";
    const std::string user1 = "Tell me a story about a cat", user2 = "What happened next?", user3 = "And then?";

    const Reply r1 = exchange(s.port(), "POST", path, turn_body(user1, 16, false, "cat"));
    ASSERT_EQ(r1.status, 200) << r1.body;
    EXPECT_EQ(cached_tokens(r1.json_body()["usage"]), 0u);
    const std::string answer1 = r1.json_body()["choices"][0]["message"]["content"];

    // Turn 2, streamed: the usage chunk carries the reused tokens.
    const Reply r2 = exchange(s.port(), "POST", path, turn_body(user2, 16, true, "cat"));
    ASSERT_EQ(r2.status, 200) << r2.body;
    json usage2;
    const std::string answer2 = sse_text(r2.body, true, &usage2);
    const std::vector<engine::ChatMessage> two = {{"user", user1}, {"assistant", answer1}, {"user", user2}};
    const size_t cached2 = cached_tokens(usage2);
    EXPECT_GE(cached2, prompt_of({{"user", user1}}).size()) << "turn 1's prompt at least is reused";
    EXPECT_LT(cached2, usage2["prompt_tokens"].get<size_t>());
    EXPECT_EQ(answer2, greedy(two, 16));

    // Turn 3, not streamed: more history, more reused.
    const Reply r3 = exchange(s.port(), "POST", path, turn_body(user3, 16, false, "cat"));
    ASSERT_EQ(r3.status, 200) << r3.body;
    const json usage3 = r3.json_body()["usage"];
    EXPECT_GT(cached_tokens(usage3), cached2);
    const std::vector<engine::ChatMessage> three = {
        {"user", user1}, {"assistant", answer1}, {"user", user2}, {"assistant", answer2}, {"user", user3}};
    EXPECT_EQ(r3.json_body()["choices"][0]["message"]["content"], greedy(three, 16));

    const std::string m = exchange(s.port(), "GET", "/metrics").body;
    EXPECT_EQ(metric(m, "assistd_prefix_cache_hits_total"), 2) << m;
    EXPECT_EQ(metric(m, "assistd_prefix_cache_misses_total"), 1);
    EXPECT_EQ(metric(m, "assistd_prefix_cache_reused_tokens_total"),
              static_cast<double>(cached2 + cached_tokens(usage3)));
    EXPECT_GE(metric(m, "assistd_prefix_cache_sequences"), 1);
    EXPECT_GE(metric(m, "assistd_prefix_cache_blocks"), 1);
    EXPECT_GT(metric(m, "assistd_prompt_tokens_prefilled_total"), 0);
    EXPECT_GE(metric(m, "assistd_prefix_cache_evictions_total"), 0);
}

TEST_F(HttpPrefix, CompletionsSharingAPromptPrefixReuseItWithoutSessions) {
    TestServer s(*model_, fp32(), routes_config());
    const std::string story = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
    const Reply first = exchange(s.port(), "POST", "/v1/completions",
                                 json({{"prompt", story + " One day"}, {"max_tokens", 4}, {"temperature", 0}}).dump());
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(cached_tokens(first.json_body()["usage"]), 0u);
    const Reply second =
        exchange(s.port(), "POST", "/v1/completions",
                 json({{"prompt", story + " The sun"}, {"max_tokens", 4}, {"temperature", 0}}).dump());
    ASSERT_EQ(second.status, 200) << second.body;
    EXPECT_GE(cached_tokens(second.json_body()["usage"]), 16u);
    const auto prompt = model_->tokenizer().encode(story + " The sun", model_->tokenizer().add_bos_default(), false);
    EXPECT_EQ(second.json_body()["choices"][0]["text"], plain_greedy_text(*model_, prompt, 4, {}));
}

TEST_F(HttpPrefix, DisabledCacheReportsZeroCachedTokens) {
    auto store = ServerSessionStore::open("", SystemClock::instance());
    ASSERT_TRUE(store.ok()) << store.error().message;
    TestServer s(*model_, fp32(false), routes_config(), true, 1 << 20, &(*store)->store());
    for (const char* user : {"Tell me a story", "More"}) {
        const Reply r = exchange(s.port(), "POST", "/v1/chat/completions", turn_body(user, 8, false, "off"));
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(cached_tokens(r.json_body()["usage"]), 0u);
    }
    EXPECT_EQ(metric(exchange(s.port(), "GET", "/metrics").body, "assistd_prefix_cache_hits_total"), 0);
}

}  // namespace
}  // namespace assistd::serve
