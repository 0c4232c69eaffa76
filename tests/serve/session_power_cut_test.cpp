// The server's durability promise over HTTP: a turn answered 200 is on disk,
// so it survives a power cut and a restart; a failed fsync answers an
// OpenAI-style 5xx error, never an answer, and the server keeps serving
// reads and generations. The session store runs on the state tests'
// power-cut file system, with the options `assistd serve` gives it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/clock.h"
#include "http_test_client.h"
#include "power_cut_file_system.h"
#include "state/durable_session_store.h"

namespace assistd::serve {
namespace {

using nlohmann::json;
using namespace test_support;

SchedulerConfig fp32() {
    SchedulerConfig c;
    c.fixed_precision = engine::Precision::kFP32;
    return c;
}

OpenAiRoutesConfig routes_config() {
    OpenAiRoutesConfig c;
    c.model_id = "stories260K";
    return c;
}

std::string turn_body(const std::string& user, bool stream, const std::string& session_id) {
    json j = {{"messages", {{{"role", "user"}, {"content", user}}}},
              {"max_tokens", 12},
              {"temperature", 0},
              {"stream", stream}};
    if (!session_id.empty()) j["session_id"] = session_id;
    return j.dump();
}

class HttpPowerCut : public StoriesModelTest<4> {
  protected:
    void SetUp() override {
        StoriesModelTest<4>::SetUp();
        dir_ = (std::filesystem::temp_directory_path() /
                ("assistd_serve_powercut_" + std::to_string(::getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                   .string();
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(
            dir_);  // the store makes only its own directory through an env
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    // Opened as ServerSessionStore opens it (replica 1, default durability), on the power-cut disk.
    std::unique_ptr<state::DurableSessionStore> open_store() {
        state::DurableSessionStoreOptions o;
        o.path = dir_ + "/sessions";
        o.replica_id = 1;
        o.env = env_.env.get();
        auto s = state::DurableSessionStore::open(o, SystemClock::instance());
        EXPECT_TRUE(s.ok()) << s.error().message;
        return s.ok() ? std::move(s).value() : nullptr;
    }

    std::string dir_;
    state::test_support::PowerCutEnv env_ = state::test_support::make_power_cut_env();
};

TEST_F(HttpPowerCut, AnAnsweredTurnSurvivesAPowerCutAndARestart) {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    std::string answer1, answer2;
    {
        TestServer s(*model_, fp32(), routes_config(), true, 1 << 20, store.get());
        const Reply r1 = exchange(s.port(), "POST", "/v1/chat/completions",
                                  turn_body("Tell me a story", false, "cut-1"));
        ASSERT_EQ(r1.status, 200) << r1.body;
        answer1 = r1.json_body()["choices"][0]["message"]["content"].get<std::string>();
        const Reply r2 = exchange(s.port(), "POST", "/v1/chat/completions",
                                  turn_body("And then?", true, "cut-1"));
        ASSERT_EQ(r2.status, 200) << r2.body;
        answer2 = sse_text(r2.body, true);
        // The power goes the moment the second answer has arrived, with the server still up.
        env_.fs->cut_power();
    }
    store.reset();
    ASSERT_TRUE(env_.fs->power_on().ok());

    store = open_store();
    ASSERT_NE(store, nullptr);
    TestServer restarted(*model_, fp32(), routes_config(), true, 1 << 20, store.get());
    const Reply got = exchange(restarted.port(), "GET", "/v1/sessions/cut-1");
    ASSERT_EQ(got.status, 200) << got.body;
    const json messages = got.json_body()["messages"];
    ASSERT_EQ(messages.size(), 4u) << got.body;
    const std::pair<std::string, std::string> expected[] = {{"user", "Tell me a story"},
                                                            {"assistant", answer1},
                                                            {"user", "And then?"},
                                                            {"assistant", answer2}};
    for (size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(messages[i]["role"], expected[i].first) << i;
        EXPECT_EQ(messages[i]["content"], expected[i].second) << i;
    }
    EXPECT_GT(got.json_body()["usage"]["completion_tokens"].get<int64_t>(), 0)
        << "the usage was lost";
}

void expect_store_failure(const Reply& r, const std::string& what) {
    EXPECT_GE(r.status, 500) << what << ": " << r.body;
    EXPECT_LT(r.status, 600) << what << ": " << r.body;
    const json j = r.json_body();
    ASSERT_TRUE(j.is_object() && j.contains("error")) << what << ": " << r.body;
    EXPECT_EQ(j["error"]["type"], "server_error") << what;
    EXPECT_EQ(j["error"]["code"], "session_store_error") << what;
    EXPECT_NE(j["error"]["message"].get<std::string>().find("takes no more writes"),
              std::string::npos)
        << what << ": " << r.body;
}

TEST_F(HttpPowerCut, AFailedFsyncAnswersA5xxAndTheServerKeepsServing) {
    auto store = open_store();
    ASSERT_NE(store, nullptr);
    TestServer s(*model_, fp32(), routes_config(), true, 1 << 20, store.get());
    const Reply first = exchange(s.port(), "POST", "/v1/chat/completions",
                                 turn_body("Tell me a story", false, "eio-1"));
    ASSERT_EQ(first.status, 200) << first.body;

    env_.fs->fail_next_syncs(1, ".log");
    expect_store_failure(
        exchange(s.port(), "POST", "/v1/chat/completions", turn_body("And then?", false, "eio-1")),
        "the turn whose fsync failed");
    expect_store_failure(
        exchange(s.port(), "POST", "/v1/chat/completions", turn_body("Again?", true, "eio-1")),
        "a later streamed turn");
    expect_store_failure(
        exchange(s.port(), "POST", "/v1/chat/completions", turn_body("Hello", false, "eio-2")),
        "a new session");
    expect_store_failure(exchange(s.port(), "DELETE", "/v1/sessions/eio-1"), "a deletion");

    const Reply read = exchange(s.port(), "GET", "/v1/sessions/eio-1");
    EXPECT_EQ(read.status, 200) << "reads go on: " << read.body;
    const Reply plain =
        exchange(s.port(), "POST", "/v1/chat/completions", turn_body("Tell me a story", false, ""));
    EXPECT_EQ(plain.status, 200) << "a turn outside any session needs no store: " << plain.body;
    const Reply health = exchange(s.port(), "GET", "/healthz");
    EXPECT_EQ(health.status, 200) << health.body;
}

}  // namespace
}  // namespace assistd::serve
