#include "serve/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/random_model.h"

#include "http_test_client.h"

namespace assistd::serve {
namespace {

using engine::Precision;
using engine::TokenId;

const std::string kStories = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

// The reference: one sequence, prefill then one token per decode, greedy.
std::vector<TokenId> plain_greedy(engine::Model& model, const std::vector<TokenId>& prompt, size_t max_tokens,
                                  Precision precision) {
    auto seq = model.create_sequence();
    EXPECT_TRUE(seq.ok());
    engine::Sampler sampler({.temperature = 0});
    engine::BatchEntry e{*seq, prompt};
    auto logits = model.decode(std::span(&e, 1), precision);
    EXPECT_TRUE(logits.ok());
    std::vector<TokenId> history = prompt, out;
    for (size_t i = 0; i < max_tokens; ++i) {
        const TokenId t = sampler.sample(*logits, history);
        if (model.tokenizer().is_end_of_generation(t)) break;
        out.push_back(t);
        history.push_back(t);
        if (i + 1 == max_tokens) break;
        engine::BatchEntry d{*seq, std::span<const TokenId>(&out.back(), 1)};
        logits = model.decode(std::span(&d, 1), precision);
        EXPECT_TRUE(logits.ok());
    }
    model.free_sequence(*seq);
    return out;
}

std::vector<TokenId> encode(engine::Model& model, const std::string& text) {
    return model.tokenizer().encode(text, model.tokenizer().add_bos_default(), false);
}

GenerationRequest greedy_request(std::vector<TokenId> prompt, size_t max_tokens) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return r;
}

SchedulerConfig fp32_config() {
    SchedulerConfig c;
    c.fixed_precision = Precision::kFP32;
    return c;
}

class StoriesScheduler : public ::testing::Test {
protected:
    void SetUp() override {
        if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
        model_ = test_support::load_model(kStories);
        ASSERT_NE(model_, nullptr);
    }
    std::unique_ptr<engine::Model> model_;
};

const char* kPrompts[] = {"Once upon a time", "The cat sat", "Lily and Tom went to the park", "One day, a little",
                          "The sun was", "Tim had a big red ball", "There was a dog", "Mom said"};

TEST_F(StoriesScheduler, OneRequestMatchesPlainGreedyLoop) {
    const auto prompt = encode(*model_, kPrompts[0]);
    const auto expected = plain_greedy(*model_, prompt, 40, Precision::kFP32);
    ASSERT_FALSE(expected.empty());

    Scheduler s(*model_, fp32_config(), SystemClock::instance());
    s.start();
    auto ch = s.submit(greedy_request(prompt, 40));
    ASSERT_TRUE(ch.ok());
    GenerationUpdate u;
    ASSERT_TRUE((*ch)->wait_finished(u, 30000));
    EXPECT_EQ(u.tokens, expected);
    EXPECT_EQ(u.completion_tokens, expected.size());
    EXPECT_EQ(u.prompt_tokens, prompt.size());
    EXPECT_EQ(u.text, model_->tokenizer().decode(expected));
    EXPECT_TRUE(u.reason == FinishReason::kLength || u.reason == FinishReason::kStop);
    s.stop();
    EXPECT_EQ(s.stats().running, 0u);
    EXPECT_EQ(model_->free_kv_blocks(), model_->total_kv_blocks());
}

TEST_F(StoriesScheduler, EightConcurrentRequestsMatchPlainGreedyLoops) {
    std::vector<std::vector<TokenId>> prompts, expected;
    for (const char* p : kPrompts) {
        prompts.push_back(encode(*model_, p));
        expected.push_back(plain_greedy(*model_, prompts.back(), 48, Precision::kFP32));
    }
    Scheduler s(*model_, fp32_config(), SystemClock::instance());
    std::vector<std::shared_ptr<GenerationChannel>> channels;
    for (auto& p : prompts) {
        auto ch = s.submit(greedy_request(p, 48));
        ASSERT_TRUE(ch.ok());
        channels.push_back(*ch);
    }
    s.start();  // all eight are queued before the first step: they run batched together
    for (size_t i = 0; i < channels.size(); ++i) {
        GenerationUpdate u;
        ASSERT_TRUE(channels[i]->wait_finished(u, 60000));
        EXPECT_EQ(u.tokens, expected[i]) << "request " << i << " (" << kPrompts[i] << ")";
    }
    EXPECT_GE(s.stats().tokens_generated, 8u);
    s.stop();
    EXPECT_EQ(model_->free_kv_blocks(), model_->total_kv_blocks());
}

TEST_F(StoriesScheduler, StopStringEndsTheTextAndIsNotEmitted) {
    const auto prompt = encode(*model_, kPrompts[0]);
    const auto expected = plain_greedy(*model_, prompt, 40, Precision::kFP32);
    const std::string full = model_->tokenizer().decode(expected);
    ASSERT_GT(full.size(), 12u);
    const std::string stop = full.substr(8, 3);
    const size_t at = full.find(stop);
    Scheduler s(*model_, fp32_config(), SystemClock::instance());
    s.start();
    auto r = greedy_request(prompt, 40);
    r.stops = {stop};
    auto ch = s.submit(r);
    ASSERT_TRUE(ch.ok());
    GenerationUpdate u;
    ASSERT_TRUE((*ch)->wait_finished(u, 30000));
    EXPECT_EQ(u.reason, FinishReason::kStop);
    EXPECT_EQ(u.text, full.substr(0, at));
}

TEST_F(StoriesScheduler, QueueFullIsRejectedImmediately) {
    SchedulerConfig c = fp32_config();
    c.max_queue = 2;
    Scheduler s(*model_, c, SystemClock::instance());  // not started: nothing leaves the queue
    const auto prompt = encode(*model_, kPrompts[1]);
    ASSERT_TRUE(s.submit(greedy_request(prompt, 4)).ok());
    ASSERT_TRUE(s.submit(greedy_request(prompt, 4)).ok());
    auto third = s.submit(greedy_request(prompt, 4));
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.error().code, ErrorCode::kResourceExhausted);
    EXPECT_EQ(s.stats().queue_depth, 2u);
}

TEST_F(StoriesScheduler, ContextOverflowIsRejected) {
    Scheduler s(*model_, fp32_config(), SystemClock::instance());
    auto r = s.submit(greedy_request(encode(*model_, kPrompts[1]), model_->info().n_ctx));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kOutOfRange);
}

TEST_F(StoriesScheduler, QueuedPastDeadlineExpires) {
    ManualClock clock;
    Scheduler s(*model_, fp32_config(), clock);
    auto r = greedy_request(encode(*model_, kPrompts[1]), 4);
    r.deadline_mono_ns = clock.now_mono_ns() + 1'000'000;
    auto ch = s.submit(r);
    ASSERT_TRUE(ch.ok());
    clock.advance_ms(5);  // before the scheduler runs: it finds the request expired
    s.start();
    GenerationUpdate u;
    ASSERT_TRUE((*ch)->wait_finished(u, 10000));
    EXPECT_EQ(u.reason, FinishReason::kDeadlineExpired);
    EXPECT_TRUE(u.tokens.empty());
    s.stop();
}

TEST_F(StoriesScheduler, CancellationFreesTheSequence) {
    Scheduler s(*model_, fp32_config(), SystemClock::instance());
    s.start();
    auto r = greedy_request(encode(*model_, kPrompts[2]), model_->info().n_ctx - 32);
    r.ignore_eos = true;
    auto ch = s.submit(r);
    ASSERT_TRUE(ch.ok());
    GenerationUpdate u;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (u.tokens.size() < 3 && std::chrono::steady_clock::now() < until) {
        (*ch)->take(u);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_GE(u.tokens.size(), 3u);
    (*ch)->cancel();
    ASSERT_TRUE((*ch)->wait_finished(u, 10000));
    EXPECT_EQ(u.reason, FinishReason::kCancelled);
    const auto until2 = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (s.stats().running != 0 && std::chrono::steady_clock::now() < until2)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(s.stats().running, 0u);
    EXPECT_EQ(model_->free_kv_blocks(), model_->total_kv_blocks());
}

// A long prompt is prefilled over several steps while a running stream keeps
// getting a token every step.
struct StepRecorder : SchedulerObserver {
    std::mutex mu;
    std::vector<std::pair<size_t, size_t>> steps;  // (sequences, tokens)
    void on_step(const StepReport& r) override {
        std::lock_guard lk(mu);
        steps.emplace_back(r.sequences, r.tokens);
    }
};

TEST(SchedulerRandomModel, ChunkedPrefillInterleavesWithDecoding) {
    const std::string path = ::testing::TempDir() + "/serve_tiny_llama.gguf";
    auto spec = engine::random_model_shape("tiny-llama");
    ASSERT_TRUE(spec.has_value());
    ASSERT_TRUE(engine::write_random_model(*spec, path).ok());
    auto model = test_support::load_model(path);
    ASSERT_NE(model, nullptr);

    SchedulerConfig c = fp32_config();
    c.prefill_chunk_tokens = 32;
    StepRecorder rec;
    Scheduler s(*model, c, SystemClock::instance(), &rec);
    s.start();
    auto first = greedy_request({1, 5, 9}, 400);
    first.ignore_eos = true;
    auto a = s.submit(first);
    ASSERT_TRUE(a.ok());
    GenerationUpdate ua;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (ua.tokens.empty() && std::chrono::steady_clock::now() < until) {
        (*a)->take(ua);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_FALSE(ua.tokens.empty());
    std::vector<TokenId> long_prompt(200);
    for (size_t i = 0; i < long_prompt.size(); ++i) long_prompt[i] = static_cast<TokenId>(1 + (i * 7) % 400);
    auto second = greedy_request(long_prompt, 4);
    second.ignore_eos = true;
    auto b = s.submit(second);
    ASSERT_TRUE(b.ok());
    GenerationUpdate ub;
    ASSERT_TRUE((*b)->wait_finished(ub, 30000));
    ASSERT_TRUE((*a)->wait_finished(ua, 30000));
    EXPECT_EQ(ub.tokens.size(), 4u);
    EXPECT_EQ(ua.tokens.size(), 400u);
    s.stop();

    // Some step carried a prefill chunk (32 tokens) plus the running stream's token, and
    // no step carried more than chunk + running tokens.
    std::lock_guard lk(rec.mu);
    size_t mixed = 0;
    for (auto [seqs, toks] : rec.steps) {
        EXPECT_LE(toks, 32u + 2u);
        if (seqs == 2 && toks == 33) ++mixed;
    }
    EXPECT_GE(mixed, 5u) << "the 200-token prompt should take ~7 chunked steps beside the decoding stream";

    // And the batched results equal the plain loops.
    EXPECT_EQ(ub.tokens, [&] {
        auto out = plain_greedy(*model, long_prompt, 100, Precision::kFP32);
        out.resize(std::min<size_t>(out.size(), 4));
        return out;
    }());
}

TEST(SchedulerRandomModel, KvCacheAdmitsOnlyWhatFitsAtFullLengthAndTheRestWaits) {
    const std::string path = ::testing::TempDir() + "/serve_tiny_llama_kv.gguf";
    auto spec = engine::random_model_shape("tiny-llama");
    ASSERT_TRUE(engine::write_random_model(*spec, path).ok());
    // 8 blocks of 16 tokens in all: two requests of 103 tokens (7 blocks each)
    // cannot both fit, so the second waits for the first instead of failing mid-stream.
    auto model = test_support::load_model(path, 16, 128);
    ASSERT_NE(model, nullptr);
    struct WidestStep : SchedulerObserver {
        void on_step(const StepReport& r) override { widest = std::max(widest, r.sequences); }
        size_t widest = 0;
    } steps;
    Scheduler s(*model, fp32_config(), SystemClock::instance(), &steps);
    auto r1 = greedy_request({1, 2, 3}, 100);
    r1.ignore_eos = true;
    auto r2 = r1;
    r2.prompt = {4, 5, 6};
    auto a = s.submit(r1);
    auto b = s.submit(r2);
    ASSERT_TRUE(a.ok() && b.ok());
    // More than the whole cache: refused at once, with the reason.
    auto too_big = s.submit(greedy_request({1, 2, 3}, 200));
    ASSERT_FALSE(too_big.ok());
    EXPECT_EQ(too_big.error().code, ErrorCode::kOutOfRange);
    EXPECT_NE(too_big.error().message.find("KV cache"), std::string::npos) << too_big.error().message;

    s.start();
    GenerationUpdate ua, ub;
    ASSERT_TRUE((*a)->wait_finished(ua, 30000));
    ASSERT_TRUE((*b)->wait_finished(ub, 30000));
    EXPECT_EQ(ua.reason, FinishReason::kLength);
    EXPECT_EQ(ub.reason, FinishReason::kLength) << ub.error.message;
    EXPECT_EQ(ua.tokens.size(), 100u);
    EXPECT_EQ(ub.tokens.size(), 100u);
    EXPECT_EQ(steps.widest, 1u) << "the two never ran in one step";
    s.stop();
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
}

}  // namespace
}  // namespace assistd::serve
