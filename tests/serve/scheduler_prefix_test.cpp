// Prefix reuse in the scheduler: a finished request's sequence stays cached,
// a prompt that shares its prefix prefills only the rest, and the answers
// are exactly those of a full prefill (greedy, FP32).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/random_model.h"
#include "serve/prefix_cache.h"
#include "serve/scheduler.h"

#include "http_test_client.h"

namespace assistd::serve {
namespace {

using engine::Precision;
using engine::TokenId;

const std::string kStories = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

// One file per test process (ctest runs tests in parallel processes; a file
// rewritten under another's mapping would crash it), removed at exit.
struct TinyModelFile {
    TinyModelFile() : path(::testing::TempDir() + "/serve_prefix_tiny_llama_" + std::to_string(::getpid()) + ".gguf") {
        auto spec = engine::random_model_shape("tiny-llama");
        EXPECT_TRUE(spec.has_value());
        EXPECT_TRUE(engine::write_random_model(*spec, path).ok());
    }
    ~TinyModelFile() { std::filesystem::remove(path); }
    std::string path;
};

const std::string& tiny_model_path() {
    static const TinyModelFile file;
    return file.path;
}

// The reference: one fresh sequence, the whole prompt prefilled, then one token per decode.
std::vector<TokenId> plain_greedy(engine::Model& model, const std::vector<TokenId>& prompt, size_t max_tokens,
                                  bool ignore_eos) {
    auto seq = model.create_sequence();
    EXPECT_TRUE(seq.ok());
    if (!seq.ok()) return {};
    engine::Sampler sampler({.temperature = 0});
    std::vector<TokenId> history = prompt, out;
    engine::BatchEntry e{*seq, prompt};
    auto logits = model.decode(std::span(&e, 1), Precision::kFP32);
    EXPECT_TRUE(logits.ok());
    for (size_t i = 0; i < max_tokens && logits.ok(); ++i) {
        const TokenId t = sampler.sample(*logits, history);
        if (!ignore_eos && model.tokenizer().is_end_of_generation(t)) break;
        out.push_back(t);
        history.push_back(t);
        if (i + 1 == max_tokens) break;
        engine::BatchEntry d{*seq, std::span<const TokenId>(&out.back(), 1)};
        logits = model.decode(std::span(&d, 1), Precision::kFP32);
        EXPECT_TRUE(logits.ok());
    }
    model.free_sequence(*seq);
    return out;
}

GenerationRequest greedy(std::vector<TokenId> prompt, size_t max_tokens, bool ignore_eos = true) {
    GenerationRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.ignore_eos = ignore_eos;
    return r;
}

SchedulerConfig config(bool prefix_cache = true, size_t blocks = 0) {
    SchedulerConfig c;
    c.fixed_precision = Precision::kFP32;
    c.prefix_cache = prefix_cache;
    c.prefix_cache_blocks = blocks;
    c.prefix_cache_min_tokens = 4;
    return c;
}

GenerationUpdate run(Scheduler& s, GenerationRequest r) {
    auto ch = s.submit(std::move(r));
    EXPECT_TRUE(ch.ok()) << (ch.ok() ? "" : ch.error().message);
    GenerationUpdate u;
    if (ch.ok()) {
        EXPECT_TRUE((*ch)->wait_finished(u, 60000));
    }
    return u;
}

// Stats are published after the step that finished a request; wait for them.
template <typename Pred>
bool eventually(Pred pred) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

std::vector<TokenId> concat(std::vector<TokenId> a, const std::vector<TokenId>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

std::vector<TokenId> ramp(size_t n, size_t seed) {
    std::vector<TokenId> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<TokenId>(3 + (i * 37 + seed * 101) % 500);
    return v;
}

class StoriesPrefix : public ::testing::Test {
protected:
    void SetUp() override {
        if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
        model_ = test_support::load_model(kStories);
        ASSERT_NE(model_, nullptr);
    }
    std::vector<TokenId> encode(const std::string& text, bool bos) {
        return model_->tokenizer().encode(text, bos && model_->tokenizer().add_bos_default(), false);
    }
    std::unique_ptr<engine::Model> model_;
};

TEST_F(StoriesPrefix, SecondTurnPrefillsOnlyTheNewTokens) {
    Scheduler s(*model_, config(), SystemClock::instance());
    s.start();
    const auto turn1 = encode("Once upon a time, there was a little girl named Lily. She loved to play", true);
    const GenerationUpdate u1 = run(s, greedy(turn1, 24));
    ASSERT_EQ(u1.reason, FinishReason::kLength);
    EXPECT_EQ(u1.cached_tokens, 0u);
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 1; }));
    const uint64_t prefilled_before = s.stats().prompt_tokens_prefilled;
    EXPECT_EQ(prefilled_before, turn1.size());

    // The next turn: the whole history again plus a new message.
    const auto turn2 = concat(concat(turn1, u1.tokens), encode(" One day, her mom said", false));
    const GenerationUpdate u2 = run(s, greedy(turn2, 24));
    ASSERT_EQ(u2.reason, FinishReason::kLength);
    // The cache held the prompt and every answer token but the last (sampled, never fed back).
    const size_t held = turn1.size() + u1.tokens.size() - 1;
    EXPECT_EQ(u2.cached_tokens, held);
    EXPECT_EQ(u2.prompt_tokens, turn2.size());
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 2; }));
    EXPECT_EQ(s.stats().prompt_tokens_prefilled - prefilled_before, turn2.size() - held);
    EXPECT_EQ(s.stats().prefix_cache_hits, 1u);
    EXPECT_EQ(s.stats().prefix_cache_misses, 1u);
    EXPECT_EQ(s.stats().prefix_cache_reused_tokens, held);
    // Turn 2's sequence supersedes turn 1's: one entry per conversation.
    EXPECT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 1; }));
    s.stop();
    EXPECT_EQ(s.stats().prefix_cache_sequences, 0u);
    EXPECT_EQ(model_->free_kv_blocks(), model_->total_kv_blocks());

    // And the answer is exactly the one a full prefill gives.
    EXPECT_EQ(u2.tokens, plain_greedy(*model_, turn2, 24, true));
}

TEST_F(StoriesPrefix, ConversationWithReuseEqualsConversationWithout) {
    std::vector<std::vector<TokenId>> answers[2];
    for (int cached = 0; cached < 2; ++cached) {
        Scheduler s(*model_, config(cached == 1), SystemClock::instance());
        s.start();
        std::vector<TokenId> history = encode("The cat sat on the mat. It was a sunny day and", true);
        const char* messages[] = {" Tom came to play.", " They ran to the park.", " Mom called them home."};
        for (const char* m : messages) {
            const GenerationUpdate u = run(s, greedy(history, 20, false));
            ASSERT_TRUE(u.reason == FinishReason::kLength || u.reason == FinishReason::kStop);
            if (cached == 0) {
                EXPECT_EQ(u.cached_tokens, 0u);
            }
            answers[cached].push_back(u.tokens);
            history = concat(concat(history, u.tokens), encode(m, false));
        }
        if (cached == 1) {
            EXPECT_GE(s.stats().prefix_cache_hits, 2u);
        }
        s.stop();
    }
    EXPECT_EQ(answers[0], answers[1]);
}

TEST(SchedulerPrefixRandomModel, ReusedAnswersEqualFullPrefills) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    SchedulerConfig c = config();
    c.prefill_chunk_tokens = 48;  // long histories prefill over several steps
    Scheduler s(*model, c, SystemClock::instance());
    s.start();
    std::vector<TokenId> history = ramp(40, 1);
    std::vector<std::vector<TokenId>> prompts, answers;
    std::vector<size_t> cached;
    for (size_t turn = 0; turn < 5; ++turn) {
        const GenerationUpdate u = run(s, greedy(history, 16));
        ASSERT_EQ(u.tokens.size(), 16u);
        prompts.push_back(history);
        answers.push_back(u.tokens);
        cached.push_back(u.cached_tokens);
        history = concat(concat(history, u.tokens), ramp(30 + turn * 7, turn + 2));
    }
    s.stop();
    EXPECT_EQ(cached[0], 0u);
    for (size_t turn = 1; turn < prompts.size(); ++turn) {
        EXPECT_EQ(cached[turn], prompts[turn - 1].size() + 15) << "turn " << turn;
        EXPECT_EQ(answers[turn], plain_greedy(*model, prompts[turn], 16, true)) << "turn " << turn;
    }
}

TEST(SchedulerPrefixRandomModel, SharedSystemPromptServesConcurrentRequests) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    Scheduler s(*model, config(), SystemClock::instance());
    s.start();
    const auto system = ramp(64, 7);
    // The first request leaves the system prompt in the cache (max_tokens 1: nothing generated is fed back).
    ASSERT_EQ(run(s, greedy(system, 1)).tokens.size(), 1u);
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 1; }));

    std::vector<std::vector<TokenId>> prompts;
    std::vector<std::shared_ptr<GenerationChannel>> channels;
    for (size_t i = 0; i < 6; ++i) {
        prompts.push_back(concat(system, ramp(5 + i, 20 + i)));
        auto ch = s.submit(greedy(prompts.back(), 12));
        ASSERT_TRUE(ch.ok());
        channels.push_back(*ch);
    }
    std::vector<std::vector<TokenId>> got;
    for (auto& ch : channels) {
        GenerationUpdate u;
        ASSERT_TRUE(ch->wait_finished(u, 60000));
        ASSERT_EQ(u.reason, FinishReason::kLength);
        EXPECT_EQ(u.cached_tokens, system.size());
        got.push_back(u.tokens);
    }
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 7; }));
    EXPECT_EQ(s.stats().prefix_cache_hits, 6u);
    // Each answer supersedes the system prompt's entry, and none contains another.
    EXPECT_EQ(s.stats().prefix_cache_sequences, 6u);
    s.stop();
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
    for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i], plain_greedy(*model, prompts[i], 12, true)) << i;
}

TEST(SchedulerPrefixRandomModel, TinyBudgetEvictsLeastRecentlyUsed) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    ASSERT_EQ(model->kv_block_tokens(), 16u);
    Scheduler s(*model, config(true, 4), SystemClock::instance());  // 4 blocks: 64 positions
    s.start();
    const auto a = ramp(30, 1), b = ramp(30, 2);
    run(s, greedy(a, 4));  // holds 33 positions: 3 blocks
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 1; }));
    EXPECT_EQ(s.stats().prefix_cache_blocks, 3u);
    run(s, greedy(b, 4));  // 3 more blocks: over the budget, so a goes
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_evictions == 1; }));
    EXPECT_EQ(s.stats().prefix_cache_sequences, 1u);
    EXPECT_LE(s.stats().prefix_cache_blocks, 4u);
    EXPECT_EQ(run(s, greedy(concat(a, {9, 9}), 2)).cached_tokens, 0u) << "a was evicted";
    EXPECT_EQ(run(s, greedy(concat(b, {9, 9}), 2)).cached_tokens, 0u) << "b was evicted by the previous request";
    // A sequence bigger than the whole budget is not kept.
    run(s, greedy(ramp(100, 3), 4));
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 5; }));
    EXPECT_LE(s.stats().prefix_cache_blocks, 4u);
    EXPECT_EQ(run(s, greedy(concat(ramp(100, 3), {9}), 2)).cached_tokens, 0u);
    s.stop();
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
}

TEST(SchedulerPrefixRandomModel, RunningRequestsTakeBlocksFromTheCache) {
    // 8 blocks of 16 positions in all, and the cache may hold every one of them.
    auto model = test_support::load_model(tiny_model_path(), 4, 128);
    ASSERT_NE(model, nullptr);
    Scheduler s(*model, config(true, 8), SystemClock::instance());
    s.start();
    const GenerationUpdate first = run(s, greedy(ramp(90, 1), 20));  // leaves 109 positions: 7 blocks
    ASSERT_EQ(first.reason, FinishReason::kLength);
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_blocks == 7; }));
    // An unrelated request needs 7 blocks as it runs: the cache gives them up.
    const auto other = ramp(20, 5);
    const GenerationUpdate u = run(s, greedy(other, 90));
    EXPECT_EQ(u.reason, FinishReason::kLength) << u.error.message;
    EXPECT_EQ(u.tokens.size(), 90u);
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 2; }));
    EXPECT_GE(s.stats().prefix_cache_evictions, 1u);
    s.stop();
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
    EXPECT_EQ(u.tokens, plain_greedy(*model, other, 90, true));
}

TEST(SchedulerPrefixRandomModel, RunningRequestsTakeSequenceSlotsFromTheCache) {
    // Two sequence slots in all: cached entries must make way for new requests.
    auto model = test_support::load_model(tiny_model_path(), 2);
    ASSERT_NE(model, nullptr);
    SchedulerConfig c = config();
    c.max_running = 2;
    Scheduler s(*model, c, SystemClock::instance());
    s.start();
    const auto a = ramp(20, 1), b = ramp(20, 2), fresh = ramp(20, 3);
    run(s, greedy(a, 3));
    run(s, greedy(b, 3));
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 2; }));
    // No slot is free: the least recently used entry (a) goes for a fresh request.
    const GenerationUpdate u = run(s, greedy(fresh, 3));
    EXPECT_EQ(u.reason, FinishReason::kLength) << u.error.message;
    EXPECT_EQ(u.cached_tokens, 0u);
    // b and fresh are cached, no slot is free: a fork of b evicts fresh's entry.
    const GenerationUpdate ub = run(s, greedy(concat(b, {7, 8}), 3));
    EXPECT_EQ(ub.reason, FinishReason::kLength) << ub.error.message;
    EXPECT_GE(ub.cached_tokens, b.size());
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 4; }));
    s.stop();
    EXPECT_EQ(ub.tokens, plain_greedy(*model, concat(b, {7, 8}), 3, true));
}

TEST(SchedulerPrefixRandomModel, OneSlotTakesTheCachedSequenceOver) {
    auto model = test_support::load_model(tiny_model_path(), 1);
    ASSERT_NE(model, nullptr);
    SchedulerConfig c = config();
    c.max_running = 1;
    Scheduler s(*model, c, SystemClock::instance());
    s.start();
    const auto a = ramp(40, 4);
    const GenerationUpdate first = run(s, greedy(a, 6));
    ASSERT_TRUE(eventually([&] { return s.stats().prefix_cache_sequences == 1; }));
    const auto next = concat(concat(a, first.tokens), {11, 12, 13});
    const GenerationUpdate u = run(s, greedy(next, 6));
    EXPECT_EQ(u.reason, FinishReason::kLength) << u.error.message;
    EXPECT_EQ(u.cached_tokens, a.size() + 5);
    s.stop();
    EXPECT_EQ(u.tokens, plain_greedy(*model, next, 6, true));
}

TEST(SchedulerPrefixRandomModel, CancelledAndRefusedRequestsLeaveNothingCached) {
    auto model = test_support::load_model(tiny_model_path(), 4, 128);
    ASSERT_NE(model, nullptr);
    Scheduler s(*model, config(true, 8), SystemClock::instance());
    s.start();
    const auto prompt = ramp(40, 9);
    // Cancelled mid-generation: the waker (on the scheduler thread) cancels after the second token.
    std::shared_ptr<GenerationChannel> ch;
    std::atomic<int> wakes{0};
    std::atomic<GenerationChannel*> raw{nullptr};
    auto submitted = s.submit(greedy(prompt, 80), [&] {
        if (++wakes >= 2 && raw.load()) raw.load()->cancel();
    });
    ASSERT_TRUE(submitted.ok());
    ch = *submitted;
    raw.store(ch.get());
    GenerationUpdate u;
    ASSERT_TRUE(ch->wait_finished(u, 10000));
    ASSERT_EQ(u.reason, FinishReason::kCancelled);
    // Refused: more than the whole KV cache at full length is never admitted
    // (so it can fail neither mid-prompt nor mid-generation) and leaves nothing.
    auto refused = s.submit(greedy(ramp(100, 10), 60));
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.error().code, ErrorCode::kOutOfRange) << refused.error().message;
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 1; }));
    EXPECT_EQ(s.stats().prefix_cache_sequences, 0u);
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
    // The same prompt again is computed from scratch and answers right.
    const GenerationUpdate again = run(s, greedy(prompt, 8));
    EXPECT_EQ(again.cached_tokens, 0u);
    s.stop();
    EXPECT_EQ(again.tokens, plain_greedy(*model, prompt, 8, true));
}

TEST(SchedulerPrefixRandomModel, DisabledCacheKeepsNothing) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    Scheduler s(*model, config(false), SystemClock::instance());
    s.start();
    const auto prompt = ramp(40, 1);
    run(s, greedy(prompt, 4));
    const GenerationUpdate u = run(s, greedy(concat(prompt, {5, 6}), 4));
    EXPECT_EQ(u.cached_tokens, 0u);
    ASSERT_TRUE(eventually([&] { return s.stats().requests_finished == 2; }));
    EXPECT_EQ(s.stats().prefix_cache_sequences, 0u);
    EXPECT_EQ(s.stats().prefix_cache_hits + s.stats().prefix_cache_misses, 0u);
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
    s.stop();
}

// Keys and values are stored in the model's KV type whatever precision
// computed them, so an entry written at FP32 serves a request pinned to BF16.
TEST(SchedulerPrefixRandomModel, EntriesServeOtherPrecisions) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    Scheduler s(*model, config(), SystemClock::instance());
    s.start();
    const auto prompt = ramp(40, 2);
    run(s, greedy(prompt, 4));
    auto r = greedy(concat(prompt, {5, 6, 7}), 4);
    r.precision = Precision::kBF16;
    const GenerationUpdate u = run(s, r);
    EXPECT_EQ(u.reason, FinishReason::kLength) << u.error.message;
    EXPECT_EQ(u.cached_tokens, prompt.size());
    s.stop();
}

// The cache on its own, without a scheduler thread.
TEST(PrefixCache, LongestCommonPrefixWinsAndKeepsOneTokenToCompute) {
    auto model = test_support::load_model(tiny_model_path());
    ASSERT_NE(model, nullptr);
    PrefixCache cache(*model, {.max_blocks = 64, .min_match_tokens = 4});
    auto fill = [&](const std::vector<TokenId>& tokens) {
        auto seq = model->create_sequence();
        EXPECT_TRUE(seq.ok());
        engine::BatchEntry e{*seq, tokens};
        EXPECT_TRUE(model->decode(std::span(&e, 1), Precision::kFP32).ok());
        cache.retain(*seq, tokens);
    };
    const auto base = ramp(40, 1);
    fill(concat(base, ramp(10, 2)));
    fill(concat(base, ramp(20, 3)));
    EXPECT_EQ(cache.stats().sequences, 2u);

    auto a = cache.acquire(concat(concat(base, ramp(20, 3)), {1}));
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, 60u);
    EXPECT_EQ(model->sequence_length(a->seq), 60u);
    model->free_sequence(a->seq);

    // The same prompt as an entry: its last token is computed again.
    auto same = cache.acquire(concat(base, ramp(10, 2)));
    ASSERT_TRUE(same.ok());
    EXPECT_EQ(same->reused, 49u);
    model->free_sequence(same->seq);

    // Too short a common prefix is no hit.
    auto miss = cache.acquire(concat(std::vector<TokenId>(base.begin(), base.begin() + 3), ramp(10, 9)));
    ASSERT_TRUE(miss.ok());
    EXPECT_EQ(miss->reused, 0u);
    model->free_sequence(miss->seq);
    EXPECT_EQ(cache.stats().hits, 2u);
    EXPECT_EQ(cache.stats().misses, 1u);

    // A longer sequence with an entry as its prefix replaces it; a shorter one is dropped.
    fill(concat(concat(base, ramp(10, 2)), ramp(5, 4)));
    EXPECT_EQ(cache.stats().sequences, 2u);
    fill(base);
    EXPECT_EQ(cache.stats().sequences, 2u);
    cache.clear();
    EXPECT_EQ(model->free_kv_blocks(), model->total_kv_blocks());
}

}  // namespace
}  // namespace assistd::serve
