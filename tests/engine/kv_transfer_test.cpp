// KV export and import (kv_blob.h): a node takes over another's computed
// context instead of prefilling it again. Imported KV must give exactly the
// logits and greedy answers of the KV it was exported from; a blob of another
// model, KV type or RoPE setting, or a damaged one, is refused and nothing is written.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/kv_blob.h"
#include "engine/random_model.h"
#include "reference_forward_helpers.h"

namespace assistd::engine {
namespace {

using reftest::TempDir;

std::string write_model(const TempDir& dir, const std::string& name, uint64_t seed, float rope_theta = 10000.f) {
    auto spec = random_model_shape("tiny-llama");
    EXPECT_TRUE(spec.has_value());
    spec->seed = seed;
    spec->rope_theta = rope_theta;
    const std::string path = dir.file(name);
    auto st = write_random_model(*spec, path);
    EXPECT_TRUE(st.ok()) << st.error().message;
    return path;
}

std::unique_ptr<Model> load(const std::string& path, DType kv_type = DType::F16) {
    ModelParams p;
    p.path = path;
    p.n_threads = 1;
    p.kv_type = kv_type;
    p.kv_block_tokens = 16;
    p.max_sequences = 8;
    auto m = Model::load(p);
    EXPECT_TRUE(m.ok()) << (m.ok() ? "" : m.error().message);
    return m.ok() ? std::move(m.value()) : nullptr;
}

std::vector<TokenId> prompt_of(size_t n, size_t vocab, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<TokenId> t(n);
    for (auto& x : t) x = static_cast<TokenId>(3 + rng() % (vocab - 3));
    return t;
}

// Greedy continuation of `seq` (whose last decoded logits are `logits`) for n tokens.
std::vector<TokenId> greedy(Model& m, SequenceId seq, std::vector<float> logits, size_t n) {
    std::vector<TokenId> out;
    for (size_t i = 0; i < n; ++i) {
        const TokenId t = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        out.push_back(t);
        const BatchEntry e{seq, std::span<const TokenId>(&out.back(), 1), false};
        auto l = m.decode(std::span<const BatchEntry>(&e, 1), Precision::kFP32);
        EXPECT_TRUE(l.ok());
        logits.assign(l->begin(), l->end());
    }
    return out;
}

std::vector<float> prefill(Model& m, SequenceId seq, std::span<const TokenId> tokens) {
    std::vector<float> last;
    for (size_t at = 0; at < tokens.size(); at += 64) {
        const size_t n = std::min<size_t>(64, tokens.size() - at);
        const BatchEntry e{seq, tokens.subspan(at, n), false};
        auto l = m.decode(std::span<const BatchEntry>(&e, 1), Precision::kFP32);
        EXPECT_TRUE(l.ok()) << l.error().message;
        last.assign(l->begin(), l->end());
    }
    return last;
}

class KvTransfer : public ::testing::Test {
  protected:
    TempDir dir_;
};

TEST_F(KvTransfer, ImportedKvGivesTheSameLogitsAndGreedyAnswerAsTheKvItCameFrom) {
    const std::string path = write_model(dir_, "a.gguf", 7);
    auto a = load(path);
    auto b = load(path);  // another instance of the same model: another node
    ASSERT_TRUE(a && b);
    const auto prompt = prompt_of(150, a->info().n_vocab, 1);  // crosses block boundaries (16)
    // The last prompt token is decoded on both sides after the transfer, so logits are compared.
    const std::span<const TokenId> history(prompt.data(), prompt.size() - 1);
    const SequenceId sa2 = *a->create_sequence();
    prefill(*a, sa2, history);
    auto blob = a->export_kv(sa2, 0, history.size(), history);
    ASSERT_TRUE(blob.ok()) << blob.error().message;

    const SequenceId sb = *b->create_sequence();
    auto tokens = b->import_kv(sb, *blob);
    ASSERT_TRUE(tokens.ok()) << tokens.error().message;
    EXPECT_EQ(*tokens, std::vector<TokenId>(history.begin(), history.end()));
    EXPECT_EQ(b->sequence_length(sb), history.size());
    const TokenId last = prompt.back();
    const BatchEntry ea{sa2, std::span<const TokenId>(&last, 1), false};
    const BatchEntry eb{sb, std::span<const TokenId>(&last, 1), false};
    auto la = a->decode(std::span<const BatchEntry>(&ea, 1), Precision::kFP32);
    ASSERT_TRUE(la.ok());
    std::vector<float> logits_a(la->begin(), la->end());
    auto lb = b->decode(std::span<const BatchEntry>(&eb, 1), Precision::kFP32);
    ASSERT_TRUE(lb.ok());
    std::vector<float> logits_b(lb->begin(), lb->end());
    EXPECT_EQ(logits_a, logits_b) << "the imported KV must be bit for bit what was computed";
    EXPECT_EQ(greedy(*a, sa2, logits_a, 24), greedy(*b, sb, logits_b, 24));
}

TEST_F(KvTransfer, ARunExportedAfterAnEarlierOneAppendsToIt) {
    const std::string path = write_model(dir_, "a.gguf", 7);
    auto a = load(path);
    auto b = load(path);
    ASSERT_TRUE(a && b);
    const auto prompt = prompt_of(90, a->info().n_vocab, 2);
    const SequenceId sa = *a->create_sequence();
    prefill(*a, sa, prompt);
    const std::span<const TokenId> all(prompt);
    auto first = a->export_kv(sa, 0, 37, all.subspan(0, 37));
    auto second = a->export_kv(sa, 37, 90, all.subspan(37));
    ASSERT_TRUE(first.ok() && second.ok());
    const SequenceId sb = *b->create_sequence();
    // Out of order is refused: the second run starts at 37, the sequence holds 0.
    auto early = b->import_kv(sb, *second);
    ASSERT_FALSE(early.ok());
    EXPECT_NE(early.error().message.find("starts at position 37"), std::string::npos) << early.error().message;
    EXPECT_EQ(b->sequence_length(sb), 0u);
    ASSERT_TRUE(b->import_kv(sb, *first).ok());
    ASSERT_TRUE(b->import_kv(sb, *second).ok());
    EXPECT_EQ(b->sequence_length(sb), 90u);
    // Same bytes back out as went in.
    auto again = b->export_kv(sb, 0, 90, all);
    auto whole = a->export_kv(sa, 0, 90, all);
    ASSERT_TRUE(again.ok() && whole.ok());
    EXPECT_EQ(*again, *whole);
}

TEST_F(KvTransfer, BlobsOfAnotherModelKvTypeOrRopeSettingAreRefused) {
    const std::string path = write_model(dir_, "a.gguf", 7);
    auto a = load(path);
    ASSERT_TRUE(a);
    const auto prompt = prompt_of(20, a->info().n_vocab, 3);
    const SequenceId sa = *a->create_sequence();
    prefill(*a, sa, prompt);
    auto blob = a->export_kv(sa, 0, prompt.size(), prompt);
    ASSERT_TRUE(blob.ok());

    struct Case {
        std::unique_ptr<Model> model;
        std::string why;
    };
    std::vector<Case> cases;
    cases.push_back({load(write_model(dir_, "other-weights.gguf", 8)), "another model"});
    cases.push_back({load(write_model(dir_, "other-rope.gguf", 7, 500000.f)), "another model"});
    cases.push_back({load(path, DType::F32), "this model keeps its KV as f32"});
    for (auto& c : cases) {
        ASSERT_TRUE(c.model);
        EXPECT_NE(c.model->kv_fingerprint(), a->kv_fingerprint()) << c.why;
        const SequenceId s = *c.model->create_sequence();
        auto r = c.model->import_kv(s, *blob);
        ASSERT_FALSE(r.ok()) << c.why;
        EXPECT_NE(r.error().message.find(c.why), std::string::npos) << r.error().message;
        EXPECT_EQ(c.model->sequence_length(s), 0u) << "a refused blob wrote nothing";
    }
    // The same file loaded twice has one fingerprint.
    EXPECT_EQ(load(path)->kv_fingerprint(), a->kv_fingerprint());
}

TEST_F(KvTransfer, DamagedTruncatedOrForeignBytesAreRefusedWithTheReason) {
    const std::string path = write_model(dir_, "a.gguf", 7);
    auto a = load(path);
    ASSERT_TRUE(a);
    const auto prompt = prompt_of(40, a->info().n_vocab, 4);
    const SequenceId sa = *a->create_sequence();
    prefill(*a, sa, prompt);
    auto blob = a->export_kv(sa, 0, prompt.size(), prompt);
    ASSERT_TRUE(blob.ok());
    const SequenceId s = *a->create_sequence();
    auto refused = [&](const std::string& bytes, const std::string& why) {
        auto r = a->import_kv(s, bytes);
        ASSERT_FALSE(r.ok()) << why;
        EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
        EXPECT_EQ(a->sequence_length(s), 0u);
    };
    std::string flipped = *blob;
    flipped[flipped.size() / 2] ^= 0x10;  // a bit in the K/V rows
    refused(flipped, "checksum mismatch");
    refused(blob->substr(0, blob->size() - 100), "truncated");
    refused(*blob + "x", "truncated or padded");
    refused("", "shorter than its header");
    refused("GGUF" + blob->substr(4), "no AKV1 magic");
    std::string count = *blob;
    count[40] = static_cast<char>(0xff);  // the position count, absurdly large
    count[47] = static_cast<char>(0x7f);
    refused(count, "absurd");
    // Exporting what the sequence does not hold is an error, not garbage.
    EXPECT_FALSE(a->export_kv(sa, 0, prompt.size() + 1, prompt_of(41, a->info().n_vocab, 4)).ok());
    EXPECT_FALSE(a->export_kv(sa, 0, prompt.size(), std::span<const TokenId>(prompt).subspan(1)).ok());
}

}  // namespace
}  // namespace assistd::engine
