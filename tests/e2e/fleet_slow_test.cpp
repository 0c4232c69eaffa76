// A fleet of three real `assistd serve` processes on loopback, replicating
// sessions over gRPC (R=3, sync acks 1): a conversation continues on any
// node with its whole history; concurrent turns through different nodes
// converge with no lost message; a node killed mid-stream loses no
// acknowledged message and the next turn is answered elsewhere (timed); a
// node drained by SIGTERM finishes its streams and hands over its changes.
// Skips without ../shared/models/stories260K.gguf.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cluster/peer_certs.h"
#include "cluster/peer_tls.h"
#include "cluster/placement.h"
#include "local_fleet.h"

namespace assistd::e2e {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using cluster::NodeId;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string fmt_message(const char* tag, int value) {
    std::string s(tag);
    s += std::to_string(value);
    return s;
}

std::string chat_body(const std::string& session, const std::string& user, int max_tokens,
                      bool stream) {
    return json{{"session_id", session},
                {"messages", json::array({{{"role", "user"}, {"content", user}}})},
                {"max_tokens", max_tokens},
                {"stream", stream}}
        .dump();
}

// A session as GET /v1/sessions/{id} on a node returns it (null on any failure).
json session_on(uint16_t port, const std::string& id) {
    const Reply r = http(port, "GET", "/v1/sessions/" + id);
    if (r.status != 200) return nullptr;
    return r.json_body();
}

// role + content of each message, in order.
std::vector<std::pair<std::string, std::string>> messages_of(const json& session) {
    std::vector<std::pair<std::string, std::string>> out;
    if (!session.is_object()) return out;
    for (const auto& m : session["messages"]) out.emplace_back(m["role"], m["content"]);
    return out;
}

// The same session document (messages with their ids, usage, title) on every running node.
bool identical_everywhere(const LocalFleet& fleet, const std::string& id, json* out = nullptr) {
    json first;
    for (int i = 0; i < fleet.size(); ++i) {
        if (!fleet.running(i)) continue;
        json s = session_on(fleet.port(i), id);
        if (s.is_null()) return false;
        if (first.is_null())
            first = s;
        else if (s != first)
            return false;
    }
    if (out) *out = first;
    return !first.is_null();
}

// A streamed chat turn, read as it arrives, with timestamps relative to t0.
struct StreamedTurn {
    int status = 0;
    std::string node;  // X-Assistd-Node
    std::string raw;
    bool done = false;           // data: [DONE] arrived
    double first_byte_ms = -1;   // the response's first byte
    double first_token_ms = -1;  // the first content chunk
    double done_ms = -1;         // [DONE]
    std::string text;            // the streamed content (complete streams only)
};

// Sends a streaming turn to `port`; `on_first_token` runs once the first
// content chunk is in (e.g. to kill the node mid-stream).
StreamedTurn stream_turn(uint16_t port, const std::string& body, Clock::time_point t0,
                         const std::function<void()>& on_first_token = {}) {
    using namespace serve::test_support;
    StreamedTurn t;
    const int fd = connect_loopback(port);
    if (fd < 0) return t;
    send_all(fd, request_text("POST", "/v1/chat/completions", body, true));
    char buf[8192];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        if (t.first_byte_ms < 0) t.first_byte_ms = ms_since(t0);
        t.raw.append(buf, static_cast<size_t>(n));
        if (t.first_token_ms < 0 &&
            t.raw.find("\"content\":\"", t.raw.find("\"content\":\"") + 1) != std::string::npos) {
            // The first chunk carries the role and "content":""; the second the first token.
            t.first_token_ms = ms_since(t0);
            if (on_first_token) on_first_token();
        }
        if (t.done_ms < 0 && t.raw.find("data: [DONE]") != std::string::npos)
            t.done_ms = ms_since(t0);
    }
    ::close(fd);
    Reply r;
    if (parse_reply(t.raw, r) > 0) {
        t.status = r.status;
        t.node = r.headers["x-assistd-node"];
        t.done = r.body.find("data: [DONE]") != std::string::npos;
        if (t.status == 200 && t.done) t.text = sse_text(r.body, true);
    } else {
        const size_t sp = t.raw.find(' ');
        if (t.raw.rfind("HTTP/1.1 ", 0) == 0 && sp != std::string::npos)
            t.status = std::atoi(t.raw.c_str() + sp + 1);
    }
    return t;
}

// The user message client c of node n sends at turn t.
std::string client_message(int node, int client, int turn) {
    return fmt_message("n", node) + fmt_message("c", client) + fmt_message("t", turn);
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t i =
        std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
    return v[i];
}

double metric(uint16_t port, const std::string& series);

class FleetTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!model_available()) GTEST_SKIP() << "no " << model_path();
    }
    // Starts three nodes and waits until each is ready (has heard its peers).
    void start_fleet(std::vector<std::string> extra = {}) {
        fleet_ = std::make_unique<LocalFleet>(3, std::move(extra));
        fleet_->start_all();
        ASSERT_TRUE(fleet_->wait_all_ready()) << fleet_->logs();
    }
    void TearDown() override {
        if (HasFailure() && fleet_) std::fprintf(stderr, "%s", fleet_->logs().c_str());
        fleet_.reset();
    }
    std::unique_ptr<LocalFleet> fleet_;
};

TEST_F(FleetTest,
       AConversationWrittenThroughOneNodeReadsIdenticallyOnTheOthersAndContinuesAnywhere) {
    ASSERT_NO_FATAL_FAILURE(start_fleet());
    LocalFleet& f = *fleet_;
    // Every response names its node; the three nodes have three ids.
    std::set<std::string> ids;
    for (int i = 0; i < 3; ++i) {
        const Reply r = http(f.port(i), "GET", "/healthz");
        ASSERT_EQ(r.status, 200);
        ASSERT_EQ(r.headers.count("x-assistd-node"), 1u);
        EXPECT_EQ(r.headers.at("x-assistd-node").size(), 16u);
        ids.insert(r.headers.at("x-assistd-node"));
    }
    EXPECT_EQ(ids.size(), 3u);

    const std::string id = "conv-a";
    std::vector<int> prompt_tokens;
    for (const char* user : {"Once upon a time", "What did the cat see?"}) {
        const Reply r =
            http(f.port(0), "POST", "/v1/chat/completions", chat_body(id, user, 16, false));
        ASSERT_EQ(r.status, 200) << r.body;
        prompt_tokens.push_back(r.json_body()["usage"]["prompt_tokens"]);
    }
    // Acknowledged by one replica when answered; every replica holds the same document soon after.
    json doc;
    ASSERT_TRUE(
        eventually([&] { return identical_everywhere(f, id, &doc); }, std::chrono::seconds(5)))
        << session_on(f.port(0), id).dump() << "\n"
        << session_on(f.port(1), id).dump() << "\n"
        << session_on(f.port(2), id).dump();
    auto msgs = messages_of(doc);
    ASSERT_EQ(msgs.size(), 4u);
    EXPECT_EQ(msgs[0], (std::pair<std::string, std::string>{"user", "Once upon a time"}));
    EXPECT_EQ(msgs[1].first, "assistant");
    EXPECT_EQ(msgs[2], (std::pair<std::string, std::string>{"user", "What did the cat see?"}));
    EXPECT_EQ(msgs[3].first, "assistant");

    // The next turn through B: answered by B over the whole history.
    const Reply b =
        http(f.port(1), "POST", "/v1/chat/completions", chat_body(id, "And then?", 16, false));
    ASSERT_EQ(b.status, 200) << b.body;
    const std::string b_node = b.headers.at("x-assistd-node");
    EXPECT_EQ(b_node, http(f.port(1), "GET", "/healthz").headers.at("x-assistd-node"));
    const int third_prompt = b.json_body()["usage"]["prompt_tokens"];
    EXPECT_GT(third_prompt, prompt_tokens[1]) << "the turn on B must see the conversation so far";
    const std::string answer = b.json_body()["choices"][0]["message"]["content"];
    ASSERT_TRUE(
        eventually([&] { return identical_everywhere(f, id, &doc); }, std::chrono::seconds(5)));
    msgs = messages_of(doc);
    ASSERT_EQ(msgs.size(), 6u);
    EXPECT_EQ(msgs[4], (std::pair<std::string, std::string>{"user", "And then?"}));
    EXPECT_EQ(msgs[5], (std::pair<std::string, std::string>{"assistant", answer}));
    EXPECT_EQ(doc["usage"]["prompt_tokens"].get<int>(),
              prompt_tokens[0] + prompt_tokens[1] + third_prompt);

    // A session nobody has is a 404 on every node (after asking the replicas), not a 5xx.
    for (int i = 0; i < 3; ++i) {
        const Reply r = http(f.port(i), "GET", "/v1/sessions/never-written");
        EXPECT_EQ(r.status, 404) << r.body;
        EXPECT_EQ(r.json_body()["error"]["code"], "session_not_found");
    }
    // A session deleted through C is gone everywhere.
    ASSERT_EQ(http(f.port(2), "DELETE", "/v1/sessions/" + id).status, 200);
    for (int i = 0; i < 3; ++i)
        EXPECT_TRUE(
            eventually([&] { return http(f.port(i), "GET", "/v1/sessions/" + id).status == 404; },
                       std::chrono::seconds(5)))
            << "node " << i;
}

TEST_F(FleetTest, ConcurrentTurnsThroughDifferentNodesConvergeWithNoLostMessage) {
    ASSERT_NO_FATAL_FAILURE(start_fleet());
    LocalFleet& f = *fleet_;
    const std::string id = "shared";
    ASSERT_EQ(
        http(f.port(0), "POST", "/v1/chat/completions", chat_body(id, "start", 4, false)).status,
        200);

    // Two clients per node, three turns each. A node answers one turn of a
    // session at a time (409 to the other); different nodes run theirs at once.
    constexpr int kClientsPerNode = 2, kTurns = 3;
    std::atomic<int> answered{0}, busy{0}, failed{0};
    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::thread> clients;
    for (int node = 0; node < 3; ++node) {
        for (int c = 0; c < kClientsPerNode; ++c) {
            clients.emplace_back([&, node, c] {
                for (int t = 0; t < kTurns; ++t) {
                    const std::string user = client_message(node, c, t);
                    for (int attempt = 0;; ++attempt) {
                        const Reply r = http(f.port(node), "POST", "/v1/chat/completions",
                                             chat_body(id, user, 4, false));
                        if (r.status == 200) {
                            ++answered;
                            break;
                        }
                        if (r.status == 409 && attempt < 500) {
                            ++busy;
                            std::this_thread::sleep_for(std::chrono::milliseconds(5));
                            continue;
                        }
                        ++failed;
                        std::lock_guard lk(mu);
                        failures.push_back(user + ": " + std::to_string(r.status) + " " + r.body);
                        break;
                    }
                }
            });
        }
    }
    for (auto& t : clients) t.join();
    EXPECT_EQ(failed.load(), 0) << (failures.empty() ? "" : failures[0]);
    const int turns = 3 * kClientsPerNode * kTurns;
    EXPECT_EQ(answered.load(), turns);
    std::printf(
        "concurrent turns: %d answered, %d refused 409 (same node, same session) and retried\n",
        answered.load(), busy.load());

    json doc;
    ASSERT_TRUE(
        eventually([&] { return identical_everywhere(f, id, &doc); }, std::chrono::seconds(10)))
        << "the replicas did not converge";
    const auto msgs = messages_of(doc);
    ASSERT_EQ(msgs.size(), static_cast<size_t>(2 + 2 * turns));
    std::map<std::string, int> seen;
    size_t assistants = 0;
    for (const auto& [role, content] : msgs) {
        if (role == "user") ++seen[content];
        if (role == "assistant") ++assistants;
    }
    EXPECT_EQ(assistants, static_cast<size_t>(1 + turns));
    // Every acknowledged user message once, and each client's in the order it sent them.
    for (int node = 0; node < 3; ++node) {
        for (int c = 0; c < kClientsPerNode; ++c) {
            size_t last = 0;
            for (int t = 0; t < kTurns; ++t) {
                const std::string user = client_message(node, c, t);
                EXPECT_EQ(seen[user], 1) << user;
                const auto at = std::find(msgs.begin(), msgs.end(),
                                          std::pair<std::string, std::string>{"user", user});
                const size_t pos = static_cast<size_t>(at - msgs.begin());
                EXPECT_GT(pos, last) << user << " out of order";
                last = pos;
            }
        }
    }
}

// What one failover trial measured: ms from the kill to the next answer's
// first token and to its completion; whether the kill cut the stream.
struct FailoverTiming {
    double first_token_ms = 0;
    double completion_ms = 0;
    bool cut_mid_stream = false;
    bool full_history = false;  // the next turn saw every acknowledged message
};

// One trial: a turn streams from `victim`, which is SIGKILLed after its first
// token; the next turn of the session goes to `next`.
FailoverTiming failover_trial(LocalFleet& f, int victim, int next, const std::string& id) {
    const Reply first = http(f.port(victim), "POST", "/v1/chat/completions",
                             chat_body(id, "Once upon a time", 12, false));
    EXPECT_EQ(first.status, 200) << first.body;
    Clock::time_point killed_at{};
    const StreamedTurn cut = stream_turn(
        f.port(victim), chat_body(id, "Tell me more about the dog", 400, true), Clock::now(), [&] {
            killed_at = Clock::now();
            ::kill(f.node(victim).pid, SIGKILL);
        });
    f.kill9(victim);  // reaps it
    EXPECT_GE(cut.first_token_ms, 0) << "the stream never started";
    const bool cut_mid_stream = !cut.done;

    const StreamedTurn after =
        stream_turn(f.port(next), chat_body(id, "What happened next?", 12, true), killed_at);
    EXPECT_EQ(after.status, 200) << after.raw;
    EXPECT_TRUE(after.done) << after.raw;
    EXPECT_EQ(after.node, http(f.port(next), "GET", "/healthz").headers["x-assistd-node"]);

    using Msg = std::pair<std::string, std::string>;
    const Msg u1{"user", "Once upon a time"},
        a1{"assistant", first.json_body()["choices"][0]["message"]["content"]},
        u2{"user", "Tell me more about the dog"}, u3{"user", "What happened next?"},
        a3{"assistant", after.text};
    // The full history: the first turn, the interrupted turn's question (it was
    // acknowledged before the stream began), its answer only if the node stored
    // it before dying (always when [DONE] arrived), then this turn.
    auto msgs = messages_of(session_on(f.port(next), id));
    const bool full = (msgs.size() == 6 || (cut_mid_stream && msgs.size() == 5)) && msgs[0] == u1 &&
                      msgs[1] == a1 && msgs[2] == u2 &&
                      (msgs.size() == 5 || msgs[3].first == "assistant") &&
                      msgs[msgs.size() - 2] == u3 && msgs.back() == a3;
    // With --sync-acks 1 the question was on the victim and one other node when
    // acknowledged; `next` may not have had it when the victim died, but its
    // quorum read (one other live replica's answer) brings it before the turn.
    EXPECT_TRUE(full) << "the next turn did not see the whole history";
    // Nothing acknowledged is lost; the surviving replicas converge on one
    // document holding every message once.
    json doc;
    EXPECT_TRUE(eventually(
        [&] {
            if (!identical_everywhere(f, id, &doc)) return false;
            msgs = messages_of(doc);
            for (const auto& m : {u1, a1, u2, u3, a3})
                if (std::count(msgs.begin(), msgs.end(), m) != 1) return false;
            return msgs.size() == 5 || msgs.size() == 6;  // with the interrupted answer, if stored
        },
        std::chrono::seconds(5)))
        << "acknowledged messages lost or replicas apart: " << doc.dump();
    EXPECT_TRUE(msgs.size() >= 2 && msgs[0] == u1 && msgs[1] == a1);
    return {after.first_token_ms, after.done_ms, cut_mid_stream, full};
}

TEST_F(FleetTest, Kill9MidStreamLosesNothingAndTheNextTurnIsAnsweredElsewhere) {
    ASSERT_NO_FATAL_FAILURE(start_fleet());
    LocalFleet& f = *fleet_;
    // ASSISTD_FAILOVER_TRIALS=20 is bench/failover.sh.
    int trials = 3;
    if (const char* env = std::getenv("ASSISTD_FAILOVER_TRIALS"))
        trials = std::max(1, std::atoi(env));
    std::vector<double> first_token, completion;
    int cut = 0, full = 0;
    for (int trial = 0; trial < trials; ++trial) {
        const int victim = trial % 3, next = (trial + 1) % 3;
        const std::string id = "failover-" + std::to_string(trial);
        const FailoverTiming t = failover_trial(f, victim, next, id);
        if (HasFailure()) break;
        first_token.push_back(t.first_token_ms);
        completion.push_back(t.completion_ms);
        cut += t.cut_mid_stream ? 1 : 0;
        full += t.full_history ? 1 : 0;
        // The victim comes back (a new incarnation) and catches up.
        f.start(victim);
        ASSERT_TRUE(f.wait_ready(victim)) << f.log(victim);
        json doc;
        EXPECT_TRUE(
            eventually([&] { return identical_everywhere(f, id, &doc); }, std::chrono::seconds(10)))
            << "the restarted node did not converge on " << id;
    }
    std::printf(
        "failover (kill -9 mid-stream -> next turn of the session on another node), %zu trials, %d "
        "cut mid-stream, %d saw the whole history at once:\n"
        "  first token p50 %.1f ms  p99 %.1f ms  max %.1f ms\n"
        "  completion  p50 %.1f ms  p99 %.1f ms  max %.1f ms\n",
        first_token.size(), cut, full, percentile(first_token, 0.5), percentile(first_token, 0.99),
        percentile(first_token, 1.0), percentile(completion, 0.5), percentile(completion, 0.99),
        percentile(completion, 1.0));
}

// Standby KV: after a turn, the session's KV goes to its other replicas; the
// node killed after its turn is replaced by one that imports the history
// instead of prefilling it, and answers exactly what the dead node would
// have (greedy, one precision).
TEST_F(FleetTest, AfterAKillTheNextTurnImportsTheStandbyKvAndAnswersAsTheDeadNodeWould) {
    ASSERT_NO_FATAL_FAILURE(start_fleet({"--precision", "fp32"}));
    LocalFleet& f = *fleet_;
    std::string story;
    for (int i = 0; i < 12; ++i) story += "Once upon a time there was a little girl named Lily who loved the park. ";
    auto turn = [&](int node, const std::string& session, const std::string& text) {
        const Reply r = http(f.port(node), "POST", "/v1/chat/completions",
                             json{{"session_id", session},
                                  {"messages", json::array({{{"role", "user"}, {"content", text}}})},
                                  {"max_tokens", 12},
                                  {"temperature", 0}}
                                 .dump());
        EXPECT_EQ(r.status, 200) << r.body;
        return r.status == 200 ? r.json_body() : json();
    };
    // The control: the same two turns on a node that never fails (session "a").
    const json a1 = turn(0, "kv-a", story);
    ASSERT_TRUE(a1.is_object());
    const size_t history = a1["usage"]["prompt_tokens"].get<size_t>() + a1["usage"]["completion_tokens"].get<size_t>();
    ASSERT_GT(history, 150u) << "a history long enough to tell a prefill from an import";
    const json a2 = turn(0, "kv-a", "What did Lily see?");

    // Session "b": its first turn on node 0, which dies right after it.
    const json b1 = turn(0, "kv-b", story);
    ASSERT_TRUE(b1.is_object());
    for (int i : {1, 2})
        EXPECT_TRUE(eventually([&] { return metric(f.port(i), "assistd_kv_standby_sessions") == 2; }))
            << "node " << i << " holds both sessions' standby KV";
    EXPECT_GE(metric(f.port(0), "assistd_kv_standby_sent_tokens_total"), 2.0 * (history - 1));
    EXPECT_EQ(metric(f.port(0), "assistd_kv_standby_send_dropped_total"), 0);
    f.kill9(0);
    const json b2 = turn(1, "kv-b", "What did Lily see?");
    ASSERT_TRUE(b2.is_object());
    const size_t cached = b2["usage"]["prompt_tokens_details"]["cached_tokens"].get<size_t>();
    EXPECT_GE(cached, history - 16) << "the history came from the standby copy";
    EXPECT_EQ(metric(f.port(1), "assistd_kv_standby_hits_total"), 1);
    EXPECT_GE(metric(f.port(1), "assistd_kv_standby_reused_tokens_total"), static_cast<double>(cached));
    EXPECT_EQ(metric(f.port(1), "assistd_kv_standby_refused_total"), 0);
    EXPECT_EQ(metric(f.port(1), "assistd_kv_recovery_time_to_first_token_seconds_count{tier=\"standby\"}"), 1);
    EXPECT_EQ(b2["choices"][0]["message"]["content"], a2["choices"][0]["message"]["content"])
        << "the answer after the failover is the one the control got without one";
    EXPECT_EQ(b1["choices"][0]["message"]["content"], a1["choices"][0]["message"]["content"]);
}

// A standby node that lost its copies (RAM, restarted) sees the next run of a
// session as a gap and tells the sender, which sends the whole session again
// after its next turn: the copy is whole again, and a failover imports it.
TEST_F(FleetTest, AStandbyThatLostItsCopyAsksForItAgain) {
    ASSERT_NO_FATAL_FAILURE(start_fleet());
    LocalFleet& f = *fleet_;
    std::string story;
    for (int i = 0; i < 12; ++i) story += "Once upon a time there was a little girl named Lily who loved the park. ";
    auto turn = [&](int node, const std::string& text) {
        const Reply r = http(f.port(node), "POST", "/v1/chat/completions",
                             json{{"session_id", "kv-gap"},
                                  {"messages", json::array({{{"role", "user"}, {"content", text}}})},
                                  {"max_tokens", 6}}
                                 .dump());
        EXPECT_EQ(r.status, 200) << r.body;
        return r.status == 200 ? r.json_body() : json();
    };
    turn(0, story);
    ASSERT_TRUE(eventually([&] { return metric(f.port(1), "assistd_kv_standby_sessions") == 1; }));
    f.kill9(1);  // its copies were in RAM
    f.start(1);
    ASSERT_TRUE(f.wait_ready(1)) << f.log(1);
    turn(0, "What did Lily do?");  // its run continues what node 1 no longer holds: a gap, and a notice
    EXPECT_TRUE(eventually([&] { return metric(f.port(1), "assistd_kv_standby_gaps_total") >= 1; }));
    const json third = turn(0, "And then?");  // sent whole again
    ASSERT_TRUE(third.is_object());
    const size_t history =
        third["usage"]["prompt_tokens"].get<size_t>() + third["usage"]["completion_tokens"].get<size_t>();
    EXPECT_TRUE(eventually([&] { return metric(f.port(1), "assistd_kv_standby_sessions") == 1; }));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the last runs on their way
    f.kill9(0);
    const json after = turn(1, "Where did she go?");
    ASSERT_TRUE(after.is_object());
    EXPECT_GE(after["usage"]["prompt_tokens_details"]["cached_tokens"].get<size_t>(), history - 16)
        << "node 1's copy was made whole again after the gap";
}

// Failover of a long conversation (issue 14's figure; bench/failover_kv.sh runs
// it on a larger model with more trials): per trial a session's history of
// ~ASSISTD_KV_FAILOVER_HISTORY tokens is written on node v; its next turn on v
// is the warm control; v is SIGKILLed right after it, and the third turn goes
// to the next node. Then the same with v restarted over its own directories
// (--kv-disk-dir) and the third turn sent to v again. Prints the first-token
// times (timed turns answer one token and are timed to their end: random
// weights often give byte tokens that a stream holds back until a character
// is complete); asserts only that the history was imported (cached tokens).
TEST_F(FleetTest, ALongConversationsFailoverImportsItsHistory) {
    int trials = 1;
    size_t target = 300;  // stories260K's context is 512
    if (const char* env = std::getenv("ASSISTD_KV_FAILOVER_TRIALS")) trials = std::max(1, std::atoi(env));
    if (const char* env = std::getenv("ASSISTD_KV_FAILOVER_HISTORY"))
        target = static_cast<size_t>(std::max(32, std::atoi(env)));
    ASSERT_NO_FATAL_FAILURE(start_fleet({"--kv-disk-dir", "@STATE@/kv"}));
    LocalFleet& f = *fleet_;
    const std::string sentence = "The little robot walked to the old park and saw a red kite in the tall tree. ";
    // Tokens per sentence, measured (no session): the history is sized in tokens.
    auto prompt_tokens = [&](const std::string& text) -> size_t {
        const Reply r = http(f.port(0), "POST", "/v1/chat/completions",
                             json{{"messages", json::array({{{"role", "user"}, {"content", text}}})},
                                  {"max_tokens", 1}}
                                 .dump());
        EXPECT_EQ(r.status, 200) << r.body;
        return r.status == 200 ? r.json_body()["usage"]["prompt_tokens"].get<size_t>() : 0;
    };
    const size_t per = std::max<size_t>(1, prompt_tokens(sentence + sentence) - prompt_tokens(sentence));
    ASSERT_FALSE(HasFailure());
    // The history comes in turns of at most ASSISTD_KV_FAILOVER_CHUNK tokens (a
    // conversation grows; a large model's prefill of one huge turn would outlast
    // the test client's 30 s read timeout).
    size_t chunk = 400;
    if (const char* env = std::getenv("ASSISTD_KV_FAILOVER_CHUNK")) chunk = static_cast<size_t>(std::max(32, std::atoi(env)));
    std::vector<std::string> history_turns;
    for (size_t n = 0; n + per <= target;) {
        std::string turn;
        for (size_t t = 0; t + per <= chunk && n + per <= target; t += per, n += per) turn += sentence;
        history_turns.push_back(std::move(turn));
    }

    auto body = [](const std::string& session, const std::string& text, bool stream) {
        json b{{"session_id", session},
               {"messages", json::array({{{"role", "user"}, {"content", text}}})},
               {"max_tokens", stream ? 1 : 8},
               {"temperature", 0},
               {"stream", stream}};
        if (stream) b["stream_options"] = {{"include_usage", true}};
        return b.dump();
    };
    auto cached_of = [](const StreamedTurn& t) -> size_t {
        const size_t at = t.raw.rfind("\"cached_tokens\":");
        return at == std::string::npos ? 0 : static_cast<size_t>(std::atoll(t.raw.c_str() + at + 16));
    };
    size_t history_tokens = 0;
    std::vector<double> settle;  // from a first turn's end until its standby copy stopped growing
    std::vector<double> server_side;  // the recovered turns' first token as the server timed it (scheduler)
    // One trial: the first turn and the control on `victim`, a kill, the next turn on `next`
    // (after restarting the victim when `restart`). Returns {control, after} first-token ms.
    auto trial = [&](const std::string& id, int victim, int next, bool restart) -> std::pair<double, double> {
        // Each session its own text: no prefix is shared with another trial's.
        for (size_t k = 0; k < history_turns.size(); ++k) {
            const Reply first = http(f.port(victim), "POST", "/v1/chat/completions",
                                     body(id, k == 0 ? id + ": " + history_turns[k] : history_turns[k], false));
            EXPECT_EQ(first.status, 200) << first.body;
            if (first.status != 200) return {0, 0};
            const json u = first.json_body()["usage"];
            history_tokens = u["prompt_tokens"].get<size_t>() + u["completion_tokens"].get<size_t>();
        }
        // The history's KV left with the turn that made it: it is in place before the turns
        // timed here (the last turn's own KV may still be on the way at the kill).
        const auto sent = Clock::now();
        const int watched = restart ? (victim + 1) % 3 : next;
        double last = -1;
        int still = 0;
        for (int i = 0; i < 200 && still < 3; ++i) {
            const double now_bytes = metric(f.port(watched), "assistd_kv_standby_bytes");
            still = now_bytes > 0 && now_bytes == last ? still + 1 : 0;
            last = now_bytes;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        settle.push_back(ms_since(sent) - 150);
        const StreamedTurn control =
            stream_turn(f.port(victim), body(id, "What did the robot see?", true), Clock::now());
        EXPECT_TRUE(control.status == 200 && control.done) << control.raw;
        f.kill9(victim);  // right after its turn: the last turn's KV may still be on the way
        if (restart) {
            f.start(victim);
            EXPECT_TRUE(f.wait_ready(victim)) << f.log(victim);
        }
        const std::string recovery_sum = "assistd_kv_recovery_time_to_first_token_seconds_sum{tier=\"standby\"}";
        const double hits_before = std::max(0.0, metric(f.port(next), "assistd_kv_standby_hits_total"));
        const double server_before = std::max(0.0, metric(f.port(next), recovery_sum));
        const StreamedTurn after = stream_turn(f.port(next), body(id, "And then?", true), Clock::now());
        EXPECT_TRUE(after.status == 200 && after.done) << after.raw;
        EXPECT_GE(cached_of(after), history_tokens - 32) << id << ": the history was prefilled again";
        EXPECT_TRUE(eventually([&] { return metric(f.port(next), "assistd_kv_standby_hits_total") == hits_before + 1; }))
            << id << ": hits were " << hits_before << ", now "
            << metric(f.port(next), "assistd_kv_standby_hits_total");
        server_side.push_back((metric(f.port(next), recovery_sum) - server_before) * 1000);
        if (!restart) {
            f.start(victim);
            EXPECT_TRUE(f.wait_ready(victim)) << f.log(victim);
        }
        return {control.done_ms, after.done_ms};
    };
    std::vector<double> warm, failover, warm_r, restarted;
    for (int t = 0; t < trials && !HasFailure(); ++t) {
        const int victim = t % 3, next = (t + 1) % 3;
        const auto [w, a] = trial("long-" + std::to_string(t), victim, next, false);
        warm.push_back(w);
        failover.push_back(a);
        const auto [w2, r] = trial("restart-" + std::to_string(t), victim, victim, true);
        warm_r.push_back(w2);
        restarted.push_back(r);
    }
    std::printf("failover of a conversation of %zu tokens (3 nodes, kill -9 after its turn), %d trials:\n"
                "  first token, same turn without failure:     p50 %.1f ms  p99 %.1f ms\n"
                "  ... next turn on another node:              p50 %.1f ms  p99 %.1f ms  (p50 %.2fx)\n"
                "  ... next turn on the node restarted (disk): p50 %.1f ms  p99 %.1f ms  (p50 %.2fx; its control "
                "p50 %.1f ms)\n"
                "  standby copy of the history's last turn complete on a peer: p50 %.0f ms after it\n"
                "  recovered turns' first token from admission to the scheduler: p50 %.1f ms  p99 %.1f ms\n",
                history_tokens, trials, percentile(warm, 0.5), percentile(warm, 0.99), percentile(failover, 0.5),
                percentile(failover, 0.99), percentile(failover, 0.5) / std::max(1e-9, percentile(warm, 0.5)),
                percentile(restarted, 0.5), percentile(restarted, 0.99),
                percentile(restarted, 0.5) / std::max(1e-9, percentile(warm_r, 0.5)), percentile(warm_r, 0.5),
                percentile(settle, 0.5), percentile(server_side, 0.5), percentile(server_side, 0.99));
}

// A node whose turns wait for a replica that stopped answering (SIGSTOP: its
// connections stay open, nothing comes back) keeps answering its probes: the
// waits run off its one HTTP I/O thread.
TEST_F(FleetTest, AStalledPeerLeavesProbesAnsweredOnAOneIoThreadNode) {
    LocalFleet f(2, {"--io-threads", "1", "--degraded-writes", "false", "--replication-ack-timeout-ms",
                     "1500", "--fetch-timeout-ms", "1500"});
    f.start_all();
    ASSERT_TRUE(f.wait_all_ready()) << f.logs();
    const int clients = 4;
    for (int c = 0; c < clients; ++c)
        ASSERT_EQ(http(f.port(0), "POST", "/v1/chat/completions",
                       chat_body("stall-" + std::to_string(c), "Once upon a time", 4, false))
                      .status,
                  200)
            << f.log(0);
    ASSERT_EQ(::kill(f.node(1).pid, SIGSTOP), 0);
    std::atomic<bool> stop{false};
    std::atomic<int> waited{0}, turns{0};
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
        threads.emplace_back([&, c] {
            for (int k = 0; k < 10 && !stop.load(); ++k) {
                const auto t0 = std::chrono::steady_clock::now();
                const Reply r = http(f.port(0), "POST", "/v1/chat/completions",
                                     chat_body("stall-" + std::to_string(c), "and then", 4, false));
                ++turns;
                if (r.status == 503 || std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(1000))
                    ++waited;
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::vector<double> probe_ms;
    for (int i = 0; i < 100; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        const Reply r = http(f.port(0), "GET", "/healthz");
        probe_ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        EXPECT_EQ(r.status, 200) << i;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    stop = true;
    for (auto& t : threads) t.join();
    ::kill(f.node(1).pid, SIGCONT);
    std::printf("stalled peer: /healthz on a 1-I/O-thread node, %zu probes while %d of %d turns waited for it: "
                "p50 %.1f ms  p99 %.1f ms  max %.1f ms\n",
                probe_ms.size(), waited.load(), turns.load(), percentile(probe_ms, 0.5),
                percentile(probe_ms, 0.99), percentile(probe_ms, 1.0));
    EXPECT_GT(waited.load(), 0) << "no turn waited for the stopped replica: the test tested nothing";
    // The target is 50 ms (docs/cluster.md); a turn that held the I/O thread would show ~1,500.
    EXPECT_LT(percentile(probe_ms, 0.99), 250.0);
}

// A streamed turn that runs a fixed number of tokens (no early end of story).
std::string long_stream_body(const std::string& session, const std::string& user, int tokens) {
    json b = json::parse(chat_body(session, user, tokens, true));
    b["ignore_eos"] = true;
    return b.dump();
}

TEST_F(FleetTest, SigtermDrainsFiftyStreamsRetriesElsewhereSeeNoFailureAndPeersSeeItLeave) {
    // Room for every stream at once (sequences and KV cache); a suspicion
    // timeout far beyond the test, so only the departure announcement can
    // take node 0 out of placement.
    ASSERT_NO_FATAL_FAILURE(start_fleet({"--max-running", "64", "--kv-cache-tokens", "65536",
                                         "--peer-suspect-ms", "60000", "--drain-grace-s", "60"}));
    LocalFleet& f = *fleet_;
    constexpr int kStreams = 50;
    // Streams that end well inside the 60 s grace on this machine (a third of it), up to 800 tokens:
    // an ASan build decodes several times slower, and streams cut by the grace would fail the test.
    const int kTokens = static_cast<int>(serve::test_support::stream_tokens_within(f.port(0), kStreams, 20.0, 100, 800));
    std::atomic<int> started{0}, finished{0}, failed{0}, retried{0};
    std::atomic<bool> terminated{false};
    std::mutex mu;
    std::vector<std::string> failures;
    std::vector<std::string> answers(kStreams), second_answers(kStreams);
    auto fail = [&](const std::string& what) {
        ++failed;
        std::lock_guard lk(mu);
        failures.push_back(what);
    };
    std::vector<std::thread> clients;
    for (int k = 0; k < kStreams; ++k) {
        clients.emplace_back([&, k] {
            const std::string id = "drain-" + std::to_string(k);
            bool counted = false;
            const StreamedTurn t =
                stream_turn(f.port(0), long_stream_body(id, "Once upon a time", kTokens),
                            Clock::now(), [&] {
                                counted = true;
                                ++started;
                            });
            if (!counted) ++started;  // never streamed: let the main thread go on
            if (t.status != 200 || !t.done) {
                fail(id + " stream: " + std::to_string(t.status) + " " + t.raw.substr(0, 300));
                return;
            }
            ++finished;
            answers[static_cast<size_t>(k)] = t.text;
            // The next turn, once SIGTERM went out: node 0 refuses while
            // draining (503) or is gone (connection refused); the client
            // retries on another node.
            eventually([&] { return terminated.load(); }, std::chrono::seconds(90));
            const int order[3] = {0, 1 + k % 2, 2 - k % 2};
            for (int node : order) {
                const Reply r = http(f.port(node), "POST", "/v1/chat/completions",
                                     chat_body(id, "And then?", 8, false));
                if (r.status == 200) {
                    second_answers[static_cast<size_t>(k)] =
                        r.json_body()["choices"][0]["message"]["content"];
                    return;
                }
                if (r.status == 503 || r.status == 0) {
                    ++retried;
                    continue;
                }
                fail(id + " turn 2 on node " + std::to_string(node) + ": " +
                     std::to_string(r.status) + " " + r.body);
                return;
            }
            fail(id + " turn 2: no node answered");
        });
    }
    const bool all_started =
        eventually([&] { return started.load() == kStreams; }, std::chrono::seconds(60));
    const int active_at_term = kStreams - finished.load();
    f.terminate(0);
    terminated = true;
    const auto term_at = Clock::now();
    for (auto& t : clients) t.join();
    ASSERT_TRUE(all_started) << f.log(0);
    const int exit_status = f.wait_exit(0, std::chrono::seconds(90));
    const double exit_ms = ms_since(term_at);
    EXPECT_EQ(exit_status, 0) << f.log(0);

    // Right after the exit -- long before the 60 s suspicion could say so --
    // both peers count node 0 departed, not up: it announced its leave.
    for (int i = 1; i < 3; ++i) {
        EXPECT_EQ(metric(f.port(i), "assistd_cluster_peers_departed"), 1) << i;
        EXPECT_EQ(metric(f.port(i), "assistd_cluster_peers_up"), 1) << i;
        EXPECT_EQ(metric(f.port(i), "assistd_cluster_peers_suspect"), 0) << i;
    }
    EXPECT_EQ(failed.load(), 0) << (failures.empty() ? "" : failures[0]);
    const std::string log = f.log(0);
    EXPECT_NE(
        log.find("left the fleet; its replicas acknowledged every change and hold every session"),
        std::string::npos)
        << log;
    EXPECT_NE(log.find("every live peer acknowledged the departure"), std::string::npos) << log;
    std::printf(
        "drain: SIGTERM with %d of %d streams of %d tokens running; exit 0 after %.0f ms; %d next turns "
        "retried on another node, 0 failed\n",
        active_at_term, kStreams, kTokens, exit_ms, retried.load());
    EXPECT_EQ(active_at_term, kStreams) << "some streams ended before SIGTERM";

    // Nothing acknowledged is lost: every session, on both remaining nodes, in order.
    auto check_sessions = [&](const char* when) {
        for (int k = 0; k < kStreams; ++k) {
            const std::string id = "drain-" + std::to_string(k);
            json doc;
            ASSERT_TRUE(eventually([&] { return identical_everywhere(f, id, &doc); },
                                   std::chrono::seconds(10)))
                << id << " " << when;
            const auto msgs = messages_of(doc);
            ASSERT_EQ(msgs.size(), 4u) << when << " " << doc.dump();
            EXPECT_EQ(msgs[0], (std::pair<std::string, std::string>{"user", "Once upon a time"}));
            EXPECT_EQ(msgs[1], (std::pair<std::string, std::string>{
                                   "assistant", answers[static_cast<size_t>(k)]}));
            EXPECT_EQ(msgs[2], (std::pair<std::string, std::string>{"user", "And then?"}));
            EXPECT_EQ(msgs[3], (std::pair<std::string, std::string>{
                                   "assistant", second_answers[static_cast<size_t>(k)]}));
        }
    };
    check_sessions("after the drain");

    // Restarted, node 0 rejoins with its next life: a member again, up on
    // both peers, and it catches up on the turns it missed.
    f.start(0);
    ASSERT_TRUE(f.wait_ready(0)) << f.log(0);
    for (int i = 1; i < 3; ++i) {
        EXPECT_TRUE(eventually([&] {
            return metric(f.port(i), "assistd_cluster_peers_up") == 2 &&
                   metric(f.port(i), "assistd_cluster_peers_departed") == 0;
        })) << i;
    }
    check_sessions("after node 0 rejoined");
}

// The node id a node names in X-Assistd-Node (0 when it does not answer).
NodeId node_id_of(uint16_t port) {
    const Reply r = http(port, "GET", "/healthz");
    const auto h = r.headers.find("x-assistd-node");
    return h == r.headers.end() ? 0 : std::stoull(h->second, nullptr, 16);
}

TEST_F(FleetTest, ANodeJoiningAFleetTakesOverItsReplicaSet) {
    // Three nodes run with a four-node peer list whose fourth is not started:
    // with a static list that is how a fleet grows (the operator lists the
    // new address up front, or DNS discovery lists the new pod). The fourth
    // joins a fleet holding N sessions (ASSISTD_JOIN_SESSIONS, default 300;
    // bench/scaleout.sh uses 10,000) and must hold every session placement
    // gives it (R=3 of 4: about three quarters).
    const char* env = std::getenv("ASSISTD_JOIN_SESSIONS");
    const int sessions = env ? std::atoi(env) : 300;
    ASSERT_GT(sessions, 0);
    LocalFleet f(4, {"--join-wait-ms", "300"});
    for (int i = 0; i < 3; ++i) f.start(i);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(f.wait_ready(i)) << f.logs();

    // Cheap sessions: one turn of one token each, from six client threads.
    constexpr int kClients = 6;
    std::atomic<int> next{0}, failed{0};
    std::mutex mu;
    std::string first_failure;
    const auto create_until = Clock::now() + std::chrono::seconds(900);
    const auto t_create = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
        clients.emplace_back([&, c] {
            for (int k = next++; k < sessions && Clock::now() < create_until; k = next++) {
                const std::string id = fmt_message("join-", k);
                int status = 0;
                for (int attempt = 0; attempt < 5 && status != 200; ++attempt) {
                    status = http(f.port(c % 3), "POST", "/v1/chat/completions",
                                  chat_body(id, "Hi", 1, false))
                                 .status;
                    if (status == 409 || status == 503) continue;  // busy: once more
                    if (status != 200) break;
                }
                if (status != 200) {
                    std::lock_guard lk(mu);
                    if (failed++ == 0) first_failure = id + ": " + std::to_string(status);
                }
            }
        });
    }
    for (auto& t : clients) t.join();
    const double create_s = ms_since(t_create) / 1000;
    ASSERT_EQ(failed.load(), 0) << first_failure;
    ASSERT_GE(next.load(), sessions) << "creating the sessions ran out of time";

    std::vector<NodeId> members;
    for (int i = 0; i < 3; ++i) members.push_back(node_id_of(f.port(i)));

    // The join, timed from the process start.
    const auto t0 = Clock::now();
    f.start(3);
    NodeId joiner = 0;
    ASSERT_TRUE(eventually([&] { return (joiner = node_id_of(f.port(3))) != 0; },
                           std::chrono::seconds(30)))
        << f.log(3);
    ASSERT_TRUE(f.wait_ready(3, std::chrono::seconds(60))) << f.log(3);
    const double ready_ms = ms_since(t0);
    members.push_back(joiner);
    size_t expected = 0;
    for (int k = 0; k < sessions; ++k) {
        const auto reps = cluster::place_replicas(fmt_message("join-", k), members, 3);
        if (std::find(reps.begin(), reps.end(), joiner) != reps.end()) ++expected;
    }
    double held = 0;
    bool complete = false;
    // Every 50 ms: a scrape lists every session, and must not be the load.
    for (const auto until = Clock::now() + std::chrono::seconds(600);
         !complete && Clock::now() < until;) {
        held = metric(f.port(3), "assistd_cluster_sessions_replicated");
        complete = held >= static_cast<double>(expected);
        if (!complete) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const double held_ms = ms_since(t0);
    EXPECT_TRUE(complete) << "the new node holds " << held << " of its " << expected
                          << " sessions\n"
                          << f.log(3);
    EXPECT_EQ(held, static_cast<double>(expected));
    EXPECT_EQ(metric(f.port(3), "assistd_cluster_sessions_local"), static_cast<double>(expected))
        << "the new node holds only sessions placed on it";
    for (int i = 0; i < 3; ++i) EXPECT_EQ(metric(f.port(i), "assistd_cluster_peers_up"), 3) << i;
    // What it holds is the conversation itself.
    for (int k = 0; k < std::min(sessions, 5); ++k) {
        json doc;
        EXPECT_TRUE(eventually([&] { return identical_everywhere(f, fmt_message("join-", k), &doc); }))
            << k;
        EXPECT_EQ(messages_of(doc).size(), 2u) << doc.dump();
    }
    std::printf(
        "scale-out join: 3 nodes holding %d sessions (created in %.1f s, %.0f/s); the 4th node "
        "is ready %.0f ms after its start and holds its replica set (%zu sessions) %.0f ms after "
        "it (%.0f deltas applied)\n",
        sessions, create_s, sessions / create_s, ready_ms, expected, held_ms,
        metric(f.port(3), "assistd_replication_deltas_applied_total"));
}

TEST_F(FleetTest, ReadinessWaitsUntilThePeersAnswerBoundedByTheJoinWait) {
    {
        // A long join wait: node 0 alone is "joining" until its peers start.
        LocalFleet f(3, {"--join-wait-ms", "60000"});
        f.start(0);
        ASSERT_TRUE(eventually([&] { return http(f.port(0), "GET", "/healthz").status == 200; },
                               std::chrono::seconds(30)))
            << f.log(0);
        const Reply r = http(f.port(0), "GET", "/readyz");
        EXPECT_EQ(r.status, 503) << r.body;
        EXPECT_EQ(r.json_body()["status"], "joining");
        f.start(1);
        f.start(2);
        // Ready well before the 60 s wait: because the peers answered.
        EXPECT_TRUE(f.wait_all_ready(std::chrono::seconds(30))) << f.logs();
    }
    {
        // A short one: a lone node becomes ready anyway (its peers may be down for good).
        LocalFleet f(3, {"--join-wait-ms", "500"});
        f.start(0);
        EXPECT_TRUE(f.wait_ready(0, std::chrono::seconds(30))) << f.log(0);
    }
}

TEST_F(FleetTest, BadClusterFlagsAreClearErrors) {
    struct Case {
        std::vector<std::string> args;
        std::string message;
    };
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("assistd-flags-" + std::to_string(::getpid())))
            .string();
    // Certificates for the TLS cases: node "n1" by the fleet's CA.
    auto tls = cluster::make_throwaway_fleet(dir + "-certs", {"n1"}, 1);
    ASSERT_TRUE(tls.ok()) << tls.error().message;
    const auto& files = tls->front();
    const std::vector<std::string> base = {"--peers", "127.0.0.1:1", "--state-dir", dir,
                                           "--listen-peer", "127.0.0.1:0"};
    auto with = [&](std::vector<std::string> more) {
        std::vector<std::string> args = base;
        args.insert(args.end(), more.begin(), more.end());
        return args;
    };
    const std::vector<Case> cases = {
        {{"--peers", "127.0.0.1:1"}, "needs --state-dir"},
        {{"--peers", "127.0.0.1:1", "--state-dir", dir}, "give --advertise-peer"},
        {{"--peers", "nohostport", "--state-dir", dir, "--listen-peer", "127.0.0.1:0"}, "--peers"},
        {{"--peers", "127.0.0.1:1", "--state-dir", dir, "--listen-peer", "127.0.0.1:99999"},
         "--listen-peer"},
        {with({"--peer-insecure", "true", "--sync-acks", "3"}), "sync"},
        {with({"--degraded-writes", "maybe"}), "--degraded-writes"},
        {with({"--peer-insecure", "true", "--node-id", "no spaces"}), "--node-id"},
        // The same keys from a YAML config: peers without a state dir.
        {{"--config", dir + ".yaml"}, "needs --state-dir"},
        // A state directory that belongs to another node id.
        {{"--peers", "127.0.0.1:1", "--state-dir", dir + "-owned", "--listen-peer", "127.0.0.1:0",
          "--node-id", "b", "--peer-insecure", "true"},
         "belongs to node 000000000000000a"},
        // Peers that prove nothing only when asked for, and TLS files that fit.
        {base, "give --peer-tls-cert, --peer-tls-key and --peer-tls-ca"},
        {with({"--peer-tls-cert", files.cert_path}), "needs all three"},
        {with({"--peer-insecure", "true", "--peer-tls-cert", files.cert_path}), "contradict"},
        {with({"--peer-tls-cert", files.cert_path, "--peer-tls-key", files.key_path,
               "--peer-tls-ca", files.cert_path}),
         "does not chain to --peer-tls-ca"},
        {with({"--peer-tls-cert", files.cert_path, "--peer-tls-key", files.key_path,
               "--peer-tls-ca", files.ca_path, "--node-id", "n2"}),
         "is not the node --peer-tls-cert names (n1)"},
        {{"--peers", "127.0.0.1:1", "--state-dir", dir, "--listen-peer", "0.0.0.0:0",
          "--advertise-peer", "node-a.example:9090", "--peer-insecure", "true"},
         "advertised by IP address"},
    };
    std::filesystem::create_directories(dir + "-owned");
    std::ofstream(dir + "-owned/node-id") << "node_id=000000000000000a\nincarnation=1\n";
    std::ofstream(dir + ".yaml") << "peers: 127.0.0.1:1\nlisten-peer: 127.0.0.1:0\nsync-acks: 1\n";
    for (const auto& c : cases) {
        std::string cmd =
            std::string(ASSISTD_BINARY) + " serve --model " + model_path() + " --port 0";
        for (const auto& a : c.args) cmd += " '" + a + "'";
        cmd += " 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        ASSERT_NE(p, nullptr);
        std::string out;
        char buf[512];
        while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
        const int status = ::pclose(p);
        EXPECT_EQ(WEXITSTATUS(status), 2) << cmd << "\n" << out;
        EXPECT_NE(out.find(c.message), std::string::npos) << cmd << "\n" << out;
    }
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(dir + "-owned");
    std::filesystem::remove_all(dir + "-certs");
    std::filesystem::remove(dir + ".yaml");
}

// Runs a shell command; its exit status and output.
std::pair<int, std::string> shell(const std::string& cmd) {
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return {-1, ""};
    std::string out;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    return {WEXITSTATUS(status), out};
}

TEST_F(FleetTest, PeerCertMakesACaAndNodeCertificatesThatPassANodesChecks) {
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("assistd-peercert-" + std::to_string(::getpid())))
            .string();
    std::filesystem::remove_all(dir);
    const std::string bin = ASSISTD_BINARY;
    auto [ca_rc, ca_out] = shell(bin + " peer-cert ca --out " + dir + "/ca");
    ASSERT_EQ(ca_rc, 0) << ca_out;
    EXPECT_EQ(std::filesystem::status(dir + "/ca/ca-key.pem").permissions() &
                  std::filesystem::perms::others_read,
              std::filesystem::perms::none)
        << "the CA's key is readable by others";
    auto [again_rc, again_out] = shell(bin + " peer-cert ca --out " + dir + "/ca");
    EXPECT_EQ(again_rc, 2) << "a second CA over the first must be refused: " << again_out;
    auto [rc, out] = shell(bin + " peer-cert issue --ca " + dir + "/ca --node pod-7 --out " + dir + "/n");
    ASSERT_EQ(rc, 0) << out;
    auto name = cluster::check_peer_tls_files({dir + "/n/node.pem", dir + "/n/node-key.pem", dir + "/n/ca.pem"});
    ASSERT_TRUE(name.ok()) << name.error().message;
    EXPECT_EQ(*name, "pod-7");
    auto [bad_rc, bad_out] = shell(bin + " peer-cert issue --ca " + dir + "/ca --node 'no spaces' --out " + dir + "/m");
    EXPECT_EQ(bad_rc, 2) << bad_out;
    EXPECT_NE(bad_out.find("--node"), std::string::npos) << bad_out;
    auto [noca_rc, noca_out] = shell(bin + " peer-cert issue --ca " + dir + "/none --node a --out " + dir + "/m");
    EXPECT_EQ(noca_rc, 2) << noca_out;
    std::filesystem::remove_all(dir);
}

// The value of an unlabelled (or fully spelled) series in a /metrics page; -1 when absent.
double metric(uint16_t port, const std::string& series) {
    const Reply r = http(port, "GET", "/metrics");
    std::string needle = "\n";
    needle += series;
    needle += ' ';
    const size_t at = r.body.find(needle);
    if (at == std::string::npos) return -1;
    return std::atof(r.body.c_str() + at + needle.size());
}

TEST_F(FleetTest, ClusterMetricsCountPeersLagFetchesAndSuspects) {
    // R=2 of 3 nodes: a node outside a session's replica set fetches it on a read.
    ASSERT_NO_FATAL_FAILURE(start_fleet({"--replication-factor", "2"}));
    LocalFleet& f = *fleet_;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(metric(f.port(i), "assistd_cluster_peers_up"), 2) << i;
    for (int i = 0; i < 3; ++i) {
        // One authenticated stream to each peer, none refused, no frame refused.
        EXPECT_EQ(metric(f.port(i), "assistd_peer_links"), 2) << i;
        EXPECT_EQ(metric(f.port(i), "assistd_peer_links_refused_total"), 0) << i;
        EXPECT_EQ(metric(f.port(i), "assistd_peer_frames_refused_total"), 0) << i;
    }
    constexpr int kSessions = 10;
    for (int k = 0; k < kSessions; ++k)
        ASSERT_EQ(http(f.port(0), "POST", "/v1/chat/completions",
                       chat_body(fmt_message("m", k), "Hi", 2, false))
                      .status,
                  200);
    const double fetched_before = metric(f.port(1), "assistd_fetch_on_miss_total") +
                                  metric(f.port(2), "assistd_fetch_on_miss_total");
    for (int k = 0; k < kSessions; ++k)
        for (int i = 1; i < 3; ++i)
            EXPECT_EQ(messages_of(session_on(f.port(i), fmt_message("m", k))).size(), 2u);
    const double fetched = metric(f.port(1), "assistd_fetch_on_miss_total") +
                           metric(f.port(2), "assistd_fetch_on_miss_total") - fetched_before;
    EXPECT_GT(fetched, 0) << "no read on a non-replica fetched (one in 3^10 placements has none)";
    EXPECT_GT(metric(f.port(0), "assistd_replication_lag_seconds_count"), 0);
    EXPECT_GT(metric(f.port(0), "assistd_replication_lag_operations_sum"), 0);
    EXPECT_GE(metric(f.port(0), "assistd_anti_entropy_repairs_total{direction=\"pushed\"}"), 0);
    EXPECT_TRUE(eventually(
        [&] { return metric(f.port(0), "assistd_replication_unacknowledged_sessions") == 0; }));
    f.kill9(2);
    EXPECT_TRUE(eventually([&] { return metric(f.port(0), "assistd_cluster_peers_suspect") == 1; },
                           std::chrono::seconds(5)));
    EXPECT_EQ(metric(f.port(0), "assistd_cluster_peers_up"), 1);
}

TEST_F(FleetTest, WithMoreNodesThanReplicasEveryNodeServesTheLatestHistory) {
    // R=2 of 3: each session has a node outside its replica set, which gets
    // no pushes. Turns go round the nodes and each must see every earlier one.
    ASSERT_NO_FATAL_FAILURE(start_fleet({"--replication-factor", "2"}));
    LocalFleet& f = *fleet_;
    constexpr int kSessions = 6, kTurns = 4;
    for (int k = 0; k < kSessions; ++k) {
        const std::string id = fmt_message("r", k);
        int last_prompt = 0;
        for (int t = 0; t < kTurns; ++t) {
            const int node = (k + t) % 3;
            const Reply r = http(f.port(node), "POST", "/v1/chat/completions",
                                 chat_body(id, fmt_message("q", t), 4, false));
            ASSERT_EQ(r.status, 200) << r.body;
            const int prompt = r.json_body()["usage"]["prompt_tokens"];
            EXPECT_GT(prompt, last_prompt)
                << id << " turn " << t << " on node " << node << " missed history";
            last_prompt = prompt;
            // Read right away (no waiting) on every node: the whole conversation so far.
            for (int i = 0; i < 3; ++i)
                EXPECT_EQ(messages_of(session_on(f.port(i), id)).size(),
                          static_cast<size_t>(2 * (t + 1)))
                    << id << " after turn " << t << ", read on node " << i;
        }
    }
    double refreshes = 0;
    for (int i = 0; i < 3; ++i) refreshes += metric(f.port(i), "assistd_read_refreshes_total");
    EXPECT_GT(refreshes, 0) << "reads on nodes outside the replica set refresh their copy";
}

TEST_F(FleetTest, DevClusterStartsReachableNodesAndStopsThemOnSigterm) {
    // Bad input first: a clear error, exit 2, nothing started.
    {
        const std::string cmd = std::string(ASSISTD_BINARY) + " dev-cluster --nodes 0 --model " +
                                model_path() + " 2>&1";
        FILE* p = ::popen(cmd.c_str(), "r");
        ASSERT_NE(p, nullptr);
        std::string out;
        char buf[512];
        while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
        EXPECT_EQ(WEXITSTATUS(::pclose(p)), 2);
        EXPECT_NE(out.find("--nodes must be 1..32"), std::string::npos) << out;
    }
    // Ports base, base+1 (HTTP) and base+100, base+101 (peers), below the ephemeral range; per pid.
    const uint16_t base = static_cast<uint16_t>(20000 + (::getpid() % 5000) * 2);
    int out_pipe[2];
    ASSERT_EQ(::pipe(out_pipe), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out_pipe[1], 1);
        ::close(out_pipe[0]);
        ::execl(ASSISTD_BINARY, ASSISTD_BINARY, "dev-cluster", "--nodes", "2", "--model",
                model_path().c_str(), "--base-port", std::to_string(base).c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    // However the test ends, the fleet is drained and gone (SIGTERM forwards to the nodes).
    struct Stop {
        pid_t pid;
        ~Stop() {
            if (pid <= 0 || ::kill(pid, SIGTERM) != 0) return;
            int st = 0;
            if (!eventually([&] { return ::waitpid(pid, &st, WNOHANG) == pid; },
                            std::chrono::seconds(60))) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &st, 0);
            }
        }
    } stop{pid};
    std::string out;
    char buf[1024];
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (out.find("Ctrl-C") == std::string::npos && Clock::now() < until) {
        const ssize_t n = ::read(out_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ASSERT_NE(out.find("2 nodes ready"), std::string::npos) << out;
    const std::string node0 = "node 0: http://127.0.0.1:" + std::to_string(base);
    const std::string node1 = "node 1: http://127.0.0.1:" + std::to_string(base + 1);
    EXPECT_NE(out.find(node0), std::string::npos) << out;
    EXPECT_NE(out.find(node1), std::string::npos) << out;
    const Reply r = http(base, "POST", "/v1/chat/completions", chat_body("dev", "Hello", 4, false));
    EXPECT_EQ(r.status, 200) << r.body;
    const auto msgs = messages_of(session_on(static_cast<uint16_t>(base + 1), "dev"));
    EXPECT_EQ(msgs.size(), 2u) << "the session written on node 0 reads on node 1";
    ::kill(pid, SIGTERM);
    int status = -1;
    const bool exited = eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; },
                                   std::chrono::seconds(60));
    EXPECT_TRUE(exited);
    if (exited) stop.pid = -1;  // reaped: its pid may belong to another process now
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    while (const ssize_t n = ::read(out_pipe[0], buf, sizeof buf)) {
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    ::close(out_pipe[0]);
    EXPECT_NE(out.find("assistd dev-cluster: stopped"), std::string::npos) << out;
    EXPECT_NE(http(base, "GET", "/healthz").status, 200) << "the nodes must be gone";
}

}  // namespace
}  // namespace assistd::e2e
