// The prefix cache's disk tier (kv_disk_tier.h): a conversation whose KV left
// RAM, or a node restarted over the same directory, reads the KV back instead
// of prefilling, with answers identical to computed ones; the byte budget
// holds; damaged or foreign files are refused and the prompt is prefilled.
#include "serve/kv_disk_tier.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/engine.h"
#include "engine/random_model.h"
#include "serve/prefix_cache.h"

namespace assistd::serve {
namespace {

namespace fs = std::filesystem;
using engine::Model;
using engine::TokenId;

class KvDiskTierTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("assistd-kvdisk-" + std::to_string(::getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        model_path_ = write_model("m.gguf", 5);
        model_ = load(model_path_);
        ASSERT_TRUE(model_);
    }
    void TearDown() override {
        model_.reset();
        fs::remove_all(dir_);
    }
    std::string write_model(const std::string& name, uint64_t seed) {
        auto spec = engine::random_model_shape("tiny-llama");
        spec->seed = seed;
        const std::string path = (dir_ / name).string();
        EXPECT_TRUE(engine::write_random_model(*spec, path).ok());
        return path;
    }
    static std::unique_ptr<Model> load(const std::string& path, size_t max_sequences = 4) {
        engine::ModelParams p;
        p.path = path;
        p.n_threads = 1;
        p.max_sequences = max_sequences;
        p.kv_cache_tokens = 4096;
        auto m = Model::load(p);
        EXPECT_TRUE(m.ok());
        return m.ok() ? std::move(m.value()) : nullptr;
    }
    std::unique_ptr<KvDiskTier> open_tier(uint64_t max_bytes = uint64_t{64} << 20) {
        auto t = KvDiskTier::open({(dir_ / "kv").string(), max_bytes, 16}, model_->kv_fingerprint());
        EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message);
        return t.ok() ? std::move(t.value()) : nullptr;
    }
    std::vector<TokenId> tokens(size_t n, uint32_t seed) const {
        std::mt19937 rng(seed);
        std::vector<TokenId> t(n);
        for (auto& x : t) x = static_cast<TokenId>(3 + rng() % (model_->info().n_vocab - 3));
        return t;
    }
    // Feeds `t` from position `from` of `seq` and answers `n` greedy tokens after it.
    std::vector<TokenId> answer(engine::SequenceId seq, const std::vector<TokenId>& t, size_t from, size_t n) {
        std::vector<float> logits;
        for (size_t at = from; at < t.size(); at += 64) {
            const engine::BatchEntry e{seq, std::span<const TokenId>(t).subspan(at, std::min<size_t>(64, t.size() - at)),
                                       false};
            auto l = model_->decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32);
            EXPECT_TRUE(l.ok());
            logits.assign(l->begin(), l->end());
        }
        std::vector<TokenId> out;
        for (size_t i = 0; i < n; ++i) {
            out.push_back(static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
            const engine::BatchEntry e{seq, std::span<const TokenId>(&out.back(), 1), false};
            auto l = model_->decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32);
            EXPECT_TRUE(l.ok());
            logits.assign(l->begin(), l->end());
        }
        return out;
    }
    // A finished turn: its sequence holds `history`; the cache keeps it.
    void finish_turn(PrefixCache& cache, const std::vector<TokenId>& history) {
        auto a = cache.acquire(history);
        ASSERT_TRUE(a.ok());
        answer(a->seq, std::vector<TokenId>(history.begin(), history.end() - 1), a->reused, 0);
        const TokenId last = history.back();
        const engine::BatchEntry e{a->seq, std::span<const TokenId>(&last, 1), false};
        ASSERT_TRUE(model_->decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32).ok());
        cache.retain(a->seq, history);
    }

    fs::path dir_;
    std::string model_path_;
    std::unique_ptr<Model> model_;
};

TEST_F(KvDiskTierTest, AnEvictedConversationComesBackFromDiskWithTheSameAnswer) {
    auto tier = open_tier();
    ASSERT_TRUE(tier);
    PrefixCache cache(*model_, {64, 16, tier.get()});
    const auto history = tokens(300, 1);
    ASSERT_NO_FATAL_FAILURE(finish_turn(cache, history));
    ASSERT_TRUE(cache.evict_one());  // the conversation leaves RAM
    tier->flush();
    EXPECT_EQ(tier->stats().entries, 1u);
    const auto& info = model_->info();
    EXPECT_GT(tier->stats().bytes, 300u * 2 * info.n_layer * info.n_head_kv * info.head_dim * 2)
        << "the K and V (f16) of 300 positions";

    // The next turn: the whole history plus a question.
    auto next = history;
    const auto question = tokens(20, 2);
    next.insert(next.end(), question.begin(), question.end());
    auto a = cache.acquire(next);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, history.size()) << "the history came from disk, not from a prefill";
    EXPECT_EQ(cache.stats().disk_hits, 1u);
    const auto from_disk = answer(a->seq, next, a->reused, 16);
    model_->free_sequence(a->seq);
    EXPECT_EQ(tier->stats().entries, 0u) << "taken back: RAM holds it now";

    auto fresh = model_->create_sequence();
    ASSERT_TRUE(fresh.ok());
    EXPECT_EQ(from_disk, answer(*fresh, next, 0, 16)) << "KV from disk must answer as computed KV does";
    model_->free_sequence(*fresh);
}

TEST_F(KvDiskTierTest, ARestartedNodeFindsTheKvItLeftOnDisk) {
    const auto history = tokens(200, 3);
    {
        auto tier = open_tier();
        PrefixCache cache(*model_, {64, 16, tier.get()});
        ASSERT_NO_FATAL_FAILURE(finish_turn(cache, history));
        cache.clear();  // a drain: what RAM holds goes to disk
    }
    // A new process: a fresh model instance and tier over the same directory.
    model_ = load(model_path_);
    auto tier = open_tier();
    ASSERT_TRUE(tier);
    EXPECT_EQ(tier->stats().entries, 1u);
    PrefixCache cache(*model_, {64, 16, tier.get()});
    auto next = history;
    next.push_back(7);
    auto a = cache.acquire(next);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, history.size());
    model_->free_sequence(a->seq);
}

TEST_F(KvDiskTierTest, TheByteBudgetEvictsTheLeastRecentlyUsedFirst) {
    // The bytes of one conversation of 100 positions, measured; then a budget for two and a half.
    uint64_t one = 0;
    {
        auto probe = open_tier();
        PrefixCache cache(*model_, {64, 16, probe.get()});
        ASSERT_NO_FATAL_FAILURE(finish_turn(cache, tokens(100, 10)));
        cache.clear();
        probe->flush();
        one = probe->stats().bytes;
        ASSERT_GT(one, 0u);
    }
    fs::remove_all(dir_ / "kv");
    auto tier = open_tier(one * 2 + one / 2);
    PrefixCache cache(*model_, {64, 16, tier.get()});
    for (uint32_t k = 0; k < 4; ++k) {
        ASSERT_NO_FATAL_FAILURE(finish_turn(cache, tokens(100, 20 + k)));
        cache.clear();
    }
    tier->flush();
    EXPECT_EQ(tier->stats().entries, 2u);
    EXPECT_LE(tier->stats().bytes, one * 2 + one / 2);
    EXPECT_EQ(tier->stats().evictions, 2u);
    // The two newest are there, the two oldest are gone.
    for (uint32_t k = 0; k < 4; ++k) {
        auto prompt = tokens(100, 20 + k);
        prompt.push_back(5);
        auto a = cache.acquire(prompt);
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(a->reused, k >= 2 ? 100u : 0u) << k;
        model_->free_sequence(a->seq);
    }
    size_t files = 0;
    for ([[maybe_unused]] const auto& f : fs::directory_iterator(dir_ / "kv")) ++files;
    EXPECT_EQ(files, 0u) << "the two taken back left the disk";
}

TEST_F(KvDiskTierTest, DamagedOrForeignFilesAreRefusedAndThePromptIsPrefilled) {
    const auto history = tokens(120, 4);
    {
        auto tier = open_tier();
        PrefixCache cache(*model_, {64, 16, tier.get()});
        ASSERT_NO_FATAL_FAILURE(finish_turn(cache, history));
        cache.clear();
    }
    // Damage the one file's KV rows.
    fs::path file;
    for (const auto& f : fs::directory_iterator(dir_ / "kv")) file = f.path();
    ASSERT_FALSE(file.empty());
    {
        std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(static_cast<std::streamoff>(fs::file_size(file) / 2));
        io.put('\x5a');
    }
    auto tier = open_tier();
    PrefixCache cache(*model_, {64, 16, tier.get()});
    auto next = history;
    next.push_back(9);
    auto a = cache.acquire(next);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, 0u) << "a damaged blob must not be used";
    EXPECT_EQ(cache.stats().disk_refused, 1u);
    EXPECT_EQ(tier->stats().refused, 1u);
    model_->free_sequence(a->seq);

    // Another model's tier files: indexed by nobody, used by nobody.
    {
        PrefixCache again(*model_, {64, 16, tier.get()});
        ASSERT_NO_FATAL_FAILURE(finish_turn(again, history));
        again.clear();
        tier->flush();
    }
    auto other = load(write_model("other.gguf", 6));
    auto other_tier = KvDiskTier::open({(dir_ / "kv").string(), uint64_t{64} << 20, 16}, other->kv_fingerprint());
    ASSERT_TRUE(other_tier.ok());
    EXPECT_EQ((*other_tier)->stats().entries, 0u);
    EXPECT_FALSE(KvDiskTier::open({(dir_ / "kv").string(), 0, 16}, 1).ok()) << "a zero budget is a usage error";
}

// A disk-tier candidate that needs a sequence slot evicts RAM entries for it;
// when its blob then fails to load, the RAM match found before may have moved
// or gone: the prompt must not fork whatever entry took its place.
TEST_F(KvDiskTierTest, AFailedDiskHitThatEvictedForASlotNeverForksAnotherConversation) {
    model_ = load(model_path_, 2);  // two sequence slots
    ASSERT_TRUE(model_);
    auto tier = open_tier();
    PrefixCache cache(*model_, {1024, 16, tier.get()});
    const auto prompt = tokens(120, 30);
    // In RAM, both slots: A shares 40 tokens with the prompt (older), B none (newer).
    auto a = std::vector<TokenId>(prompt.begin(), prompt.begin() + 40);
    const auto rest = tokens(30, 31);
    a.insert(a.end(), rest.begin(), rest.end());
    ASSERT_NO_FATAL_FAILURE(finish_turn(cache, a));
    ASSERT_NO_FATAL_FAILURE(finish_turn(cache, tokens(70, 32)));
    // On disk: the longest match (100 tokens of the prompt), computed by another
    // instance of the model (no slot is free here), then damaged.
    {
        auto other = load(model_path_, 1);
        ASSERT_TRUE(other);
        const std::vector<TokenId> d(prompt.begin(), prompt.begin() + 100);
        const auto seq = *other->create_sequence();
        const engine::BatchEntry e{seq, std::span<const TokenId>(d), false};
        ASSERT_TRUE(other->decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32).ok());
        auto blob = other->export_kv(seq, 0, d.size(), d);
        ASSERT_TRUE(blob.ok());
        std::string damaged = *blob;
        damaged[damaged.size() / 2] ^= 0x5a;
        tier->put(d, std::move(damaged));
        tier->flush();
    }
    auto got = cache.acquire(prompt);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(cache.stats().disk_refused, 1u);
    // A was evicted for the slot; B shares nothing: nothing may be reused.
    EXPECT_EQ(got->reused, 0u);
    model_->free_sequence(got->seq);
}

}  // namespace
}  // namespace assistd::serve
