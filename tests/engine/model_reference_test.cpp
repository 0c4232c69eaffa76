// The model against an independent naive forward pass (reference_forward_helpers),
// and stories260K against llama.cpp's greedy output. Also the random-model
// writer those tests stand on.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/random_model.h"
#include "reference_forward_helpers.h"

namespace assistd::engine {
namespace {

using reftest::argmax;
using reftest::ReferenceModel;
using reftest::ReferenceSequence;
using reftest::reference_logits;
using reftest::row_relative_error;
using reftest::TempDir;

// FP32 compute against double: what is left is float rounding in long dot products.
constexpr double kFp32Tolerance = 1e-4;

using Rows = std::vector<std::vector<float>>;
using RefRows = std::vector<std::vector<double>>;

std::string write_shape(const TempDir& dir, const std::string& shape, DType dtype, bool tied = false,
                        uint64_t seed = 1) {
    auto spec = random_model_shape(shape);
    EXPECT_TRUE(spec.has_value()) << shape;
    spec->dtype = dtype;
    spec->tied_output = tied;
    spec->seed = seed;
    const std::string path =
        dir.file(fmt::format("{}-{}{}-{}.gguf", shape, dtype_name(dtype), tied ? "-tied" : "", seed));
    auto s = write_random_model(*spec, path);
    EXPECT_TRUE(s.ok()) << s.error().message;
    return path;
}

// FP32 comparisons keep K/V in F32 too: the default F16 cache alone costs ~1e-3.
// Two threads even for these tiny models (by default they would run small
// batches alone), so the parallel forward is what the reference checks.
std::unique_ptr<Model> load_model(const std::string& path, DType kv_type = DType::F32,
                                  size_t min_parallel_weight_bytes = 0,
                                  const std::function<void(ModelParams&)>& tweak = {}) {
    ModelParams params;
    params.path = path;
    params.n_threads = 2;
    params.kv_type = kv_type;
    params.min_parallel_weight_bytes = min_parallel_weight_bytes;
    if (tweak) tweak(params);
    auto m = Model::load(params);
    if (!m) {
        ADD_FAILURE() << "Model::load(" << path << "): " << m.error().message;
        return nullptr;
    }
    return std::move(m.value());
}

std::shared_ptr<const ReferenceModel> load_reference(const std::string& path) {
    auto r = ReferenceModel::load(path);
    if (!r) {
        ADD_FAILURE() << r.error().message;
        return nullptr;
    }
    return r.value();
}

// Deterministic token ids in [1, n_vocab), starting with 1 (BOS in our vocabularies).
std::vector<TokenId> test_tokens(size_t n, size_t n_vocab, uint32_t seed = 7) {
    std::vector<TokenId> t{1};
    uint32_t s = seed;
    while (t.size() < n) {
        s = s * 1664525u + 1013904223u;
        t.push_back(static_cast<TokenId>(1 + (s >> 8) % (n_vocab - 1)));
    }
    return t;
}

Rows copy_rows(std::span<const float> logits, size_t n_vocab) {
    Rows rows;
    for (size_t i = 0; i + n_vocab <= logits.size(); i += n_vocab)
        rows.emplace_back(logits.begin() + static_cast<ptrdiff_t>(i), logits.begin() + static_cast<ptrdiff_t>(i + n_vocab));
    return rows;
}

// Decodes `tokens` into a fresh sequence in chunks of `chunk`, keeping every position's logits.
Rows decode_chunked(Model& m, std::span<const TokenId> tokens, Precision precision, size_t first_chunk, size_t chunk) {
    auto seq = m.create_sequence();
    EXPECT_TRUE(seq.ok());
    if (!seq) return {};
    Rows rows;
    size_t at = 0;
    while (at < tokens.size()) {
        const size_t n = std::min(at == 0 ? first_chunk : chunk, tokens.size() - at);
        BatchEntry e{*seq, tokens.subspan(at, n), true};
        auto logits = m.decode(std::span(&e, 1), precision);
        EXPECT_TRUE(logits.ok()) << logits.error().message;
        if (!logits) return {};
        EXPECT_EQ(logits->size(), n * m.info().n_vocab);
        for (auto& r : copy_rows(*logits, m.info().n_vocab)) rows.push_back(std::move(r));
        at += n;
    }
    m.free_sequence(*seq);
    return rows;
}

struct Comparison {
    double max_error = 0;        // worst row_relative_error
    size_t worst_row = 0;
    size_t argmax_agree = 0;
    size_t rows = 0;
};

Comparison compare(const Rows& got, const RefRows& want) {
    Comparison c;
    EXPECT_EQ(got.size(), want.size());
    c.rows = std::min(got.size(), want.size());
    for (size_t i = 0; i < c.rows; ++i) {
        const double e = row_relative_error(got[i], want[i]);
        if (!(e <= c.max_error)) { c.max_error = e; c.worst_row = i; }
        if (argmax(std::span<const float>(got[i])) == argmax(std::span<const double>(want[i]))) ++c.argmax_agree;
    }
    return c;
}

// ---------------------------------------------------------------------------
// The random-model writer.

TEST(RandomModel, KnownShapesAreListedAndValid) {
    const auto names = random_model_shape_names();
    for (const char* n : {"smollm2-135m", "llama-1b", "tiny-llama", "tiny-qwen2", "tiny-llama-oddff"})
        EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
    for (const auto& n : names) {
        auto spec = random_model_shape(n);
        ASSERT_TRUE(spec) << n;
        if (spec->n_ff % 32 != 0) spec->dtype = DType::F32;
        EXPECT_TRUE(validate_random_model_spec(*spec).ok()) << n;
    }
    EXPECT_FALSE(random_model_shape("no-such-shape"));
    auto s = *random_model_shape("smollm2-135m");
    EXPECT_EQ(s.arch, "llama");
    EXPECT_EQ(std::tie(s.n_embd, s.n_layer, s.n_head, s.n_head_kv, s.n_ff, s.n_vocab),
              std::make_tuple(size_t{576}, size_t{30}, size_t{9}, size_t{3}, size_t{1536}, size_t{49152}));
    EXPECT_EQ(s.rope_theta, 100000.f);
    EXPECT_FALSE(s.tied_output);
    auto l = *random_model_shape("llama-1b");
    EXPECT_EQ(std::tie(l.n_embd, l.n_layer, l.n_head, l.n_head_kv, l.n_ff, l.n_vocab),
              std::make_tuple(size_t{2048}, size_t{16}, size_t{32}, size_t{8}, size_t{8192}, size_t{32000}));
}

TEST(RandomModel, FileHasLlamaCppTensorLayoutAndMetadata) {
    TempDir dir;
    for (const char* shape : {"tiny-llama", "tiny-qwen2"}) {
        SCOPED_TRACE(shape);
        const auto spec = *random_model_shape(shape);
        const std::string path = write_shape(dir, shape, DType::BF16);
        auto f = GgufFile::open(path);
        ASSERT_TRUE(f.ok()) << f.error().message;
        const GgufFile& g = **f;
        const std::string a = spec.arch;
        EXPECT_EQ(g.get_string("general.architecture").value_or(""), a);
        EXPECT_EQ(g.get_uint("general.file_type").value_or(99), 32u);
        EXPECT_EQ(g.get_uint(a + ".embedding_length").value_or(0), spec.n_embd);
        EXPECT_EQ(g.get_uint(a + ".block_count").value_or(0), spec.n_layer);
        EXPECT_EQ(g.get_uint(a + ".feed_forward_length").value_or(0), spec.n_ff);
        EXPECT_EQ(g.get_uint(a + ".attention.head_count").value_or(0), spec.n_head);
        EXPECT_EQ(g.get_uint(a + ".attention.head_count_kv").value_or(0), spec.n_head_kv);
        EXPECT_EQ(g.get_uint(a + ".context_length").value_or(0), spec.n_ctx);
        EXPECT_EQ(g.get_uint(a + ".rope.dimension_count").value_or(0), spec.n_embd / spec.n_head);
        EXPECT_EQ(g.get_uint(a + ".vocab_size").value_or(0), spec.n_vocab);
        EXPECT_FLOAT_EQ(static_cast<float>(g.get_float(a + ".rope.freq_base").value_or(0)), spec.rope_theta);
        EXPECT_FLOAT_EQ(static_cast<float>(g.get_float(a + ".attention.layer_norm_rms_epsilon").value_or(0)),
                        spec.rms_eps);
        EXPECT_EQ(g.get_string("tokenizer.ggml.model").value_or(""), a == "qwen2" ? "gpt2" : "llama");
        ASSERT_NE(g.get_array("tokenizer.ggml.tokens"), nullptr);
        EXPECT_EQ(g.get_array("tokenizer.ggml.tokens")->count, spec.n_vocab);

        const uint64_t E = spec.n_embd, V = spec.n_vocab, F = spec.n_ff;
        const uint64_t KV = spec.n_head_kv * (spec.n_embd / spec.n_head);
        auto expect_tensor = [&](const std::string& name, std::vector<uint64_t> dims, DType type) {
            const GgufTensor* t = g.tensor(name);
            ASSERT_NE(t, nullptr) << name;
            EXPECT_EQ(t->dims, dims) << name;
            EXPECT_EQ(t->dtype, type) << name;
        };
        expect_tensor("token_embd.weight", {E, V}, DType::BF16);
        expect_tensor("output_norm.weight", {E}, DType::F32);
        expect_tensor("output.weight", {E, V}, DType::BF16);
        size_t expected_tensors = 3;
        for (size_t l = 0; l < spec.n_layer; ++l) {
            const std::string b = fmt::format("blk.{}.", l);
            expect_tensor(b + "attn_norm.weight", {E}, DType::F32);
            expect_tensor(b + "attn_q.weight", {E, E}, DType::BF16);
            expect_tensor(b + "attn_k.weight", {E, KV}, DType::BF16);
            expect_tensor(b + "attn_v.weight", {E, KV}, DType::BF16);
            expect_tensor(b + "attn_output.weight", {E, E}, DType::BF16);
            expect_tensor(b + "ffn_norm.weight", {E}, DType::F32);
            expect_tensor(b + "ffn_gate.weight", {E, F}, DType::BF16);
            expect_tensor(b + "ffn_up.weight", {E, F}, DType::BF16);
            expect_tensor(b + "ffn_down.weight", {F, E}, DType::BF16);
            expected_tensors += 9;
            if (a == "qwen2") {
                expect_tensor(b + "attn_q.bias", {E}, DType::F32);
                expect_tensor(b + "attn_k.bias", {KV}, DType::F32);
                expect_tensor(b + "attn_v.bias", {KV}, DType::F32);
                expected_tensors += 3;
            } else {
                EXPECT_EQ(g.tensor(b + "attn_q.bias"), nullptr);
            }
        }
        EXPECT_EQ(g.tensors().size(), expected_tensors);
    }
    // Tied: no output.weight at all.
    auto tied = GgufFile::open(write_shape(dir, "tiny-llama", DType::F32, true));
    ASSERT_TRUE(tied.ok());
    EXPECT_EQ((*tied)->tensor("output.weight"), nullptr);
    EXPECT_EQ((*tied)->get_uint("general.file_type").value_or(99), 0u);
    auto q8 = GgufFile::open(write_shape(dir, "tiny-llama", DType::Q8_0));
    ASSERT_TRUE(q8.ok());
    EXPECT_EQ((*q8)->get_uint("general.file_type").value_or(99), 7u);
    EXPECT_EQ((*q8)->tensor("blk.0.ffn_down.weight")->dtype, DType::Q8_0);
    auto f16 = GgufFile::open(write_shape(dir, "tiny-llama", DType::F16));
    ASSERT_TRUE(f16.ok());
    EXPECT_EQ((*f16)->get_uint("general.file_type").value_or(99), 1u);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(RandomModel, SameSeedGivesSameBytesAndOtherSeedsDiffer) {
    TempDir dir;
    const auto a = read_bytes(write_shape(dir, "tiny-qwen2", DType::F16, false, 5));
    const auto b = read_bytes(write_shape(dir, "tiny-qwen2", DType::F16, false, 5));
    const auto c = read_bytes(write_shape(dir, "tiny-qwen2", DType::F16, false, 6));
    ASSERT_FALSE(a.empty());
    EXPECT_EQ(a, b);
    ASSERT_EQ(a.size(), c.size());
    EXPECT_NE(a, c);
}

TEST(RandomModel, WeightsHaveTheIntendedScale) {
    TempDir dir;
    auto f = GgufFile::open(write_shape(dir, "tiny-llama", DType::F32));
    ASSERT_TRUE(f.ok());
    auto stats = [&](const std::string& name) {
        const GgufTensor* t = (*f)->tensor(name);
        const float* v = static_cast<const float*>(t->data);
        double sum = 0, sq = 0;
        for (uint64_t i = 0; i < t->n_elements; ++i) { sum += v[i]; sq += double(v[i]) * v[i]; }
        const double mean = sum / double(t->n_elements);
        return std::make_pair(mean, std::sqrt(sq / double(t->n_elements) - mean * mean));
    };
    auto [qm, qs] = stats("blk.0.attn_q.weight");
    EXPECT_NEAR(qm, 0.0, 0.01);
    EXPECT_NEAR(qs, 1.0 / 8.0, 0.01);  // 1/sqrt(n_embd = 64)
    auto [dm, ds] = stats("blk.1.ffn_down.weight");
    EXPECT_NEAR(ds, 2.0 / std::sqrt(96.0), 0.02);  // 2/sqrt(n_ff): layer outputs outweigh the embedding
    (void)dm;
    auto [nm, ns] = stats("blk.0.attn_norm.weight");
    EXPECT_NEAR(nm, 1.0, 0.05);
    EXPECT_LT(ns, 0.2);
}

TEST(RandomModel, RejectsSpecsTheEngineCouldNotLoad) {
    TempDir dir;
    auto spec = *random_model_shape("tiny-llama-oddff");
    spec.dtype = DType::Q8_0;
    auto s = write_random_model(spec, dir.file("x.gguf"));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("multiples of 32"), std::string::npos) << s.error().message;
    EXPECT_FALSE(std::filesystem::exists(dir.file("x.gguf")));

    spec = *random_model_shape("tiny-llama");
    spec.n_head = 5;  // 64 is not a multiple of 5
    s = validate_random_model_spec(spec);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("n_head"), std::string::npos) << s.error().message;
    spec = *random_model_shape("tiny-llama");
    spec.n_head_kv = 3;
    EXPECT_FALSE(validate_random_model_spec(spec).ok());
    spec = *random_model_shape("tiny-llama");
    spec.arch = "bert";
    s = validate_random_model_spec(spec);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("bert"), std::string::npos);

    s = write_random_model(*random_model_shape("tiny-llama"), dir.file("no/such/dir/x.gguf"));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kIo);
    EXPECT_NE(s.error().message.find("no/such/dir/x.gguf"), std::string::npos) << s.error().message;
}

TEST(GgufWriterStreaming, GivesTheSameBytesAsTheInMemoryWriter) {
    TempDir dir;
    auto fill = [](size_t n, float base) {
        std::vector<float> f(n);
        for (size_t i = 0; i < n; ++i) f[i] = base + 0.25f * static_cast<float>(i);
        return f;
    };
    auto as_bytes = [](DType t, const std::vector<float>& f) {
        std::vector<uint8_t> b(dtype_row_bytes(t, f.size()));
        quantize_row(t, f.data(), b.data(), f.size());
        return b;
    };
    GgufWriter mem, streamed;
    for (GgufWriter* w : {&mem, &streamed}) {
        w->set_string("general.architecture", "llama");
        w->set_u32("llama.block_count", 1);
    }
    mem.add_tensor("a", DType::F32, {3}, as_bytes(DType::F32, fill(3, 1)));
    mem.add_tensor("b", DType::F16, {64, 2}, as_bytes(DType::F16, fill(128, 2)));
    mem.add_tensor("c", DType::Q8_0, {32, 3}, as_bytes(DType::Q8_0, fill(96, -3)));
    streamed.add_tensor("a", DType::F32, {3}, as_bytes(DType::F32, fill(3, 1)));  // immediate and deferred mix
    streamed.add_tensor_deferred("b", DType::F16, {64, 2});
    streamed.add_tensor_deferred("c", DType::Q8_0, {32, 3});
    std::vector<size_t> asked;
    auto s = streamed.write_streaming(dir.file("s.gguf"), [&](size_t i, std::vector<uint8_t>& out) -> Status {
        asked.push_back(i);
        out = i == 1 ? as_bytes(DType::F16, fill(128, 2)) : as_bytes(DType::Q8_0, fill(96, -3));
        return {};
    });
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(asked, (std::vector<size_t>{1, 2}));
    EXPECT_EQ(read_bytes(dir.file("s.gguf")), mem.to_bytes());
    auto f = GgufFile::open(dir.file("s.gguf"));
    ASSERT_TRUE(f.ok()) << f.error().message;
    EXPECT_EQ((*f)->tensors().size(), 3u);
}

TEST(GgufWriterStreaming, ProducerErrorsAndWrongSizesLeaveNoFile) {
    TempDir dir;
    GgufWriter w;
    w.add_tensor_deferred("a", DType::F32, {4});
    auto s = w.write_streaming(dir.file("e.gguf"), [](size_t, std::vector<uint8_t>&) -> Status {
        return make_error(ErrorCode::kInternal, "producer failed");
    });
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().message, "producer failed");
    EXPECT_FALSE(std::filesystem::exists(dir.file("e.gguf")));
    s = w.write_streaming(dir.file("e.gguf"), [](size_t, std::vector<uint8_t>& out) -> Status {
        out.assign(3, 0);
        return {};
    });
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("expected 16"), std::string::npos) << s.error().message;
    EXPECT_FALSE(std::filesystem::exists(dir.file("e.gguf")));
}

// ---------------------------------------------------------------------------
// The reference itself.

TEST(ReferenceForward, ChunkingDoesNotChangeLogits) {
    TempDir dir;
    auto ref = load_reference(write_shape(dir, "tiny-qwen2", DType::F32));
    ASSERT_TRUE(ref);
    const auto tokens = test_tokens(12, ref->hparams().n_vocab);
    const RefRows whole = reference_logits(ref, tokens);
    ReferenceSequence seq(ref);
    RefRows chunked = seq.append(std::span(tokens).first(5));
    for (auto& r : seq.append(std::span(tokens).subspan(5))) chunked.push_back(std::move(r));
    EXPECT_EQ(whole, chunked);
}

TEST(ReferenceForward, RandomModelsGiveVariedSaneLogits) {
    TempDir dir;
    for (const char* shape : {"tiny-llama", "tiny-qwen2", "tiny-llama-oddff"}) {
        for (bool tied : {false, true}) {
            SCOPED_TRACE(fmt::format("{} tied={}", shape, tied));
            auto ref = load_reference(write_shape(dir, shape, DType::F32, tied));
            ASSERT_TRUE(ref);
            const size_t V = ref->hparams().n_vocab;
            ReferenceSequence seq(ref);
            std::vector<int32_t> tokens = {1};
            std::set<int32_t> distinct;
            for (int step = 0; step < 32; ++step) {
                const auto rows = seq.append(std::span(tokens).last(1));
                const auto& row = rows.back();
                double mean = 0, sq = 0;
                for (double v : row) { mean += v; sq += v * v; }
                mean /= double(V);
                const double std_dev = std::sqrt(sq / double(V) - mean * mean);
                EXPECT_GT(std_dev, 0.3) << "logits nearly uniform at step " << step;
                EXPECT_LT(std_dev, 20.0) << "logits exploding at step " << step;
                const int32_t next = static_cast<int32_t>(argmax(std::span<const double>(row)));
                distinct.insert(next);
                tokens.push_back(next);
            }
            std::printf("[ %s%s ] %zu distinct tokens in 32 greedy steps\n", shape, tied ? " tied" : "", distinct.size());
            EXPECT_GE(distinct.size(), 4u) << "greedy decoding of a random model should not be stuck";
        }
    }
}

// ---------------------------------------------------------------------------
// The model against the reference on random tiny models.

struct ShapeCase {
    const char* shape;
    bool tied;
};
std::string case_name(const ::testing::TestParamInfo<ShapeCase>& info) {
    std::string n = info.param.shape;
    std::replace(n.begin(), n.end(), '-', '_');
    return n + (info.param.tied ? "_tied" : "");
}

class RandomModelVsReference : public ::testing::TestWithParam<ShapeCase> {
protected:
    void SetUp() override {
        path_ = write_shape(dir_, GetParam().shape, DType::F32, GetParam().tied);
        ref_ = load_reference(path_);
        ASSERT_TRUE(ref_);
        tokens_ = test_tokens(20, ref_->hparams().n_vocab);
        want_ = reference_logits(ref_, tokens_);
    }
    TempDir dir_;
    std::string path_;
    std::shared_ptr<const ReferenceModel> ref_;
    std::vector<TokenId> tokens_;
    RefRows want_;
};

TEST_P(RandomModelVsReference, AllLogitsAtFp32) {
    auto m = load_model(path_);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->info().n_vocab, ref_->hparams().n_vocab);
    const Comparison c = compare(decode_chunked(*m, tokens_, Precision::kFP32, tokens_.size(), 1), want_);
    EXPECT_LE(c.max_error, kFp32Tolerance) << "worst row " << c.worst_row;
    EXPECT_EQ(c.argmax_agree, c.rows);
}

TEST_P(RandomModelVsReference, TokenByTokenAfterPrefillAtFp32) {
    auto m = load_model(path_);
    ASSERT_TRUE(m);
    const Comparison c = compare(decode_chunked(*m, tokens_, Precision::kFP32, 10, 1), want_);
    EXPECT_LE(c.max_error, kFp32Tolerance) << "worst row " << c.worst_row;
    // Uneven chunks too: positions must continue across calls whatever the split.
    const Comparison c2 = compare(decode_chunked(*m, tokens_, Precision::kFP32, 3, 7), want_);
    EXPECT_LE(c2.max_error, kFp32Tolerance) << "worst row " << c2.worst_row;
}

TEST_P(RandomModelVsReference, SmallBatchesOfATinyModelRunAloneWithTheSameLogits) {
    auto parallel = load_model(path_);
    auto alone = load_model(path_, DType::F32, ModelParams{}.min_parallel_weight_bytes);
    ASSERT_TRUE(parallel && alone);
    ASSERT_LT(alone->info().weight_bytes, ModelParams{}.min_parallel_weight_bytes) << "not a tiny model";
    // Chunks of up to 16 tokens run on one thread; each row's sums are the
    // same whichever thread computes them.
    const Rows a = decode_chunked(*alone, tokens_, Precision::kFP32, 5, 1);
    const Rows p = decode_chunked(*parallel, tokens_, Precision::kFP32, 5, 1);
    EXPECT_EQ(a, p);
    const Comparison c = compare(a, want_);
    EXPECT_LE(c.max_error, kFp32Tolerance) << "worst row " << c.worst_row;
}

// Weights copied into huge-page memory (the default), read from the file's
// mapping (option off), or read from the mapping because the copy does not
// fit the budget: the same bytes, so bit-identical logits, natively and for a
// converted precision.
TEST_P(RandomModelVsReference, WeightsCopiedToHugePagesOrReadFromTheFileGiveTheSameLogits) {
    auto copied = load_model(path_);
    auto mapped = load_model(path_, DType::F32, 0, [](ModelParams& p) { p.weights_in_huge_pages = false; });
    // Room for nothing: FP32 (the file's type) converts nothing, so it runs
    // from the mapping; BF16 needs a conversion and says it is over budget.
    auto tight = load_model(path_, DType::F32, 0, [](ModelParams& p) { p.converted_weights_budget = 1; });
    ASSERT_TRUE(copied && mapped && tight);
    const Rows c = decode_chunked(*copied, tokens_, Precision::kFP32, 6, 1);
    EXPECT_EQ(c, decode_chunked(*mapped, tokens_, Precision::kFP32, 6, 1));
    EXPECT_EQ(c, decode_chunked(*tight, tokens_, Precision::kFP32, 6, 1));
    EXPECT_LE(compare(c, want_).max_error, kFp32Tolerance);
    EXPECT_EQ(decode_chunked(*copied, tokens_, Precision::kBF16, 6, 1),
              decode_chunked(*mapped, tokens_, Precision::kBF16, 6, 1));
    const Status over = tight->prepare_precision(Precision::kBF16);
    ASSERT_FALSE(over.ok());
    EXPECT_NE(over.error().message.find("over the budget"), std::string::npos) << over.error().message;
}

TEST_P(RandomModelVsReference, ThreeSequencesOfDifferentLengthsInOneBatch) {
    auto m = load_model(path_);
    ASSERT_TRUE(m);
    const size_t V = ref_->hparams().n_vocab;
    const std::vector<std::vector<TokenId>> seqs = {test_tokens(20, V, 7), test_tokens(7, V, 11), test_tokens(13, V, 13)};
    std::vector<SequenceId> ids;
    std::vector<BatchEntry> batch;
    for (const auto& s : seqs) {
        auto id = m->create_sequence();
        ASSERT_TRUE(id.ok());
        ids.push_back(*id);
        batch.push_back({*id, s, true});
    }
    auto logits = m->decode(batch, Precision::kFP32);
    ASSERT_TRUE(logits.ok()) << logits.error().message;
    ASSERT_EQ(logits->size(), (20 + 7 + 13) * V);
    const Rows rows = copy_rows(*logits, V);
    size_t at = 0;
    std::vector<ReferenceSequence> refs;
    for (size_t i = 0; i < seqs.size(); ++i) {
        refs.emplace_back(ref_);
        const RefRows want = refs.back().append(seqs[i]);
        const Rows got(rows.begin() + static_cast<ptrdiff_t>(at), rows.begin() + static_cast<ptrdiff_t>(at + seqs[i].size()));
        at += seqs[i].size();
        const Comparison c = compare(got, want);
        EXPECT_LE(c.max_error, kFp32Tolerance) << "sequence " << i << " worst row " << c.worst_row;
    }
    // One more token each, last logits only: each sequence continues at its own position.
    const std::vector<TokenId> next = {5, 6, 7};
    batch.clear();
    for (size_t i = 0; i < seqs.size(); ++i) batch.push_back({ids[i], std::span(&next[i], 1), false});
    logits = m->decode(batch, Precision::kFP32);
    ASSERT_TRUE(logits.ok()) << logits.error().message;
    ASSERT_EQ(logits->size(), 3 * V);
    const Rows last = copy_rows(*logits, V);
    for (size_t i = 0; i < seqs.size(); ++i) {
        EXPECT_EQ(m->sequence_length(ids[i]), seqs[i].size() + 1);
        const RefRows want = refs[i].append(std::span(&next[i], 1));
        EXPECT_LE(row_relative_error(last[i], want[0]), kFp32Tolerance) << "sequence " << i;
    }
}

// Batched decode: one token for each of n sequences of different lengths in
// one call. Up to 8 tokens every thread keeps its own copy of the residual
// stream; more share one split by tokens. Both must continue each sequence
// at its own position.
TEST_P(RandomModelVsReference, OneTokenEachForManySequencesInOneBatch) {
    const size_t V = ref_->hparams().n_vocab;
    for (size_t n : {size_t{5}, size_t{8}, size_t{9}, size_t{16}}) {
        SCOPED_TRACE(fmt::format("{} sequences", n));
        auto m = load_model(path_);
        ASSERT_TRUE(m);
        std::vector<SequenceId> ids;
        std::vector<ReferenceSequence> refs;
        std::vector<TokenId> next;
        for (size_t i = 0; i < n; ++i) {
            const std::vector<TokenId> prompt = test_tokens(1 + i % 6, V, static_cast<uint32_t>(17 + i));
            auto id = m->create_sequence();
            ASSERT_TRUE(id.ok());
            ids.push_back(*id);
            BatchEntry e{*id, prompt, false};
            ASSERT_TRUE(m->decode(std::span<const BatchEntry>(&e, 1), Precision::kFP32).ok());
            refs.emplace_back(ref_);
            refs.back().append(prompt);
            next.push_back(static_cast<TokenId>((3 + 5 * i) % V));
        }
        for (int step = 0; step < 2; ++step) {
            std::vector<BatchEntry> batch;
            for (size_t i = 0; i < n; ++i) batch.push_back({ids[i], std::span(&next[i], 1), false});
            auto logits = m->decode(batch, Precision::kFP32);
            ASSERT_TRUE(logits.ok()) << logits.error().message;
            ASSERT_EQ(logits->size(), n * V);
            const Rows got = copy_rows(*logits, V);
            for (size_t i = 0; i < n; ++i) {
                const RefRows want = refs[i].append(std::span(&next[i], 1));
                EXPECT_LE(row_relative_error(got[i], want[0]), kFp32Tolerance) << "sequence " << i << " step " << step;
                next[i] = static_cast<TokenId>((next[i] + 11) % V);
            }
        }
    }
}

// Half-precision compute: rounding of activations (and weights for FP16/BF16
// conversions) costs about 2^-11 (FP16) or 2^-8 (BF16) per operation. Seen
// when written: ~2e-3 (FP16) and ~1.5e-2 (BF16) of the row's largest logit.
TEST_P(RandomModelVsReference, Fp16AndBf16StayCloseToReference) {
    auto m = load_model(path_, DType::F16);
    ASSERT_TRUE(m);
    const std::pair<Precision, double> cases[] = {{Precision::kFP16, 1e-2}, {Precision::kBF16, 5e-2}};
    for (const auto& [precision, tolerance] : cases) {
        SCOPED_TRACE(precision_name(precision));
        const Comparison c = compare(decode_chunked(*m, tokens_, precision, 10, 1), want_);
        std::printf("[ %s ] %s: max relative error %.3g, argmax agrees on %zu/%zu\n", GetParam().shape,
                    precision_name(precision), c.max_error, c.argmax_agree, c.rows);
        EXPECT_LE(c.max_error, tolerance) << "worst row " << c.worst_row;
        EXPECT_GE(c.argmax_agree * 10, c.rows * 8) << "argmax should agree on at least 80% of positions";
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, RandomModelVsReference,
                         ::testing::Values(ShapeCase{"tiny-llama", false}, ShapeCase{"tiny-llama", true},
                                           ShapeCase{"tiny-qwen2", false}, ShapeCase{"tiny-llama-oddff", false}),
                         case_name);

// A long context: 1,500 positions cross many attention tiles (64 positions)
// and KV blocks (16), through a full prefill chunk, odd chunks that start
// mid-tile, and single-token decode steps; both attention schedules (query
// rows in lanes, head dimension in lanes) run on every tier this covers.
TEST(LongContextVsReference, FifteenHundredPositionsAtFp32) {
    TempDir dir;
    const std::string path = write_shape(dir, "tiny-llama", DType::F32);
    auto ref = load_reference(path);
    ASSERT_TRUE(ref);
    ModelParams params;
    params.path = path;
    params.n_threads = 2;
    params.kv_type = DType::F32;
    params.n_ctx = 2048;
    auto loaded = Model::load(params);
    ASSERT_TRUE(loaded.ok()) << loaded.error().message;
    Model& m = **loaded;
    const size_t V = ref->hparams().n_vocab;
    const std::vector<TokenId> tokens = test_tokens(1500, V, 21);
    const RefRows want = reference_logits(ref, tokens);

    auto seq = m.create_sequence();
    ASSERT_TRUE(seq.ok());
    Rows got;
    size_t at = 0;
    while (at < tokens.size()) {
        const size_t left = tokens.size() - at;
        const size_t n = at == 0 ? 512 : left <= 8 ? 1 : std::min<size_t>(61, left - 8);
        BatchEntry e{*seq, std::span(tokens).subspan(at, n), true};
        auto logits = m.decode(std::span(&e, 1), Precision::kFP32);
        ASSERT_TRUE(logits.ok()) << logits.error().message;
        for (auto& r : copy_rows(*logits, V)) got.push_back(std::move(r));
        at += n;
    }
    const Comparison c = compare(got, want);
    EXPECT_LE(c.max_error, kFp32Tolerance) << "worst row " << c.worst_row;
    EXPECT_EQ(c.argmax_agree, c.rows);
}

// Stored F16/BF16/Q8_0 weights at Precision::kNative, against the reference
// on the same (dequantized) weights: only the compute differs. Q8_0 native
// also quantizes activations to 8 bits, hence its looser bound. Seen when
// written: ~7e-4 (F16), ~1.2e-2 (BF16), ~3.5e-2 (Q8_0).
TEST(StoredTypesVsReference, NativePrecisionMatchesDequantizedReference) {
    TempDir dir;
    const std::tuple<const char*, DType, double> cases[] = {
        {"tiny-llama", DType::F16, 1e-2},       {"tiny-llama", DType::BF16, 5e-2}, {"tiny-llama", DType::Q8_0, 8e-2},
        {"tiny-qwen2", DType::F16, 1e-2},       {"tiny-qwen2", DType::BF16, 5e-2}, {"tiny-qwen2", DType::Q8_0, 8e-2},
        {"tiny-llama-oddff", DType::F16, 1e-2}, {"tiny-llama-oddff", DType::BF16, 5e-2},
    };
    for (const auto& [shape, dtype, tolerance] : cases) {
        SCOPED_TRACE(fmt::format("{} {}", shape, dtype_name(dtype)));
        const std::string path = write_shape(dir, shape, dtype);
        auto ref = load_reference(path);
        ASSERT_TRUE(ref);
        const auto tokens = test_tokens(20, ref->hparams().n_vocab);
        const RefRows want = reference_logits(ref, tokens);
        auto m = load_model(path, DType::F16);
        ASSERT_TRUE(m);
        EXPECT_EQ(m->info().file_type, dtype);
        const Comparison c = compare(decode_chunked(*m, tokens, Precision::kNative, 10, 1), want);
        std::printf("[ %s %s ] native: max relative error %.3g, argmax agrees on %zu/%zu\n", shape,
                    std::string(dtype_name(dtype)).c_str(), c.max_error, c.argmax_agree, c.rows);
        EXPECT_LE(c.max_error, tolerance) << "worst row " << c.worst_row;
        EXPECT_GE(c.argmax_agree * 10, c.rows * 8);
    }
}

// A file that mixes weight types inside the groups that share one prepared
// input (Q/K/V; gate/up), as some converters write: every precision's weight
// set, in huge pages (every matrix copied to the arena, sized by the same
// groups) and read from the mapping, against the reference on the file's own
// weights. At native precision a group takes its first matrix's type.
TEST(MixedTypesVsReference, EveryPrecisionWithAndWithoutHugePages) {
    TempDir dir;
    auto spec = random_model_shape("tiny-llama");
    ASSERT_TRUE(spec.has_value());
    spec->dtype = DType::F32;
    spec->tensor_types = {
        {"token_embd.weight", DType::F16},
        {"blk.0.attn_q.weight", DType::F16},      {"blk.0.attn_k.weight", DType::BF16},
        {"blk.0.attn_v.weight", DType::F32},      {"blk.0.attn_output.weight", DType::BF16},
        {"blk.0.ffn_gate.weight", DType::F32},    {"blk.0.ffn_up.weight", DType::F16},
        {"blk.0.ffn_down.weight", DType::F16},    {"blk.1.attn_q.weight", DType::BF16},
        {"blk.1.attn_k.weight", DType::F32},      {"blk.1.attn_v.weight", DType::F16},
        {"blk.1.ffn_gate.weight", DType::BF16},   {"blk.1.ffn_up.weight", DType::F32},
        {"output.weight", DType::BF16},
    };
    const std::string path = dir.file("tiny-llama-mixed.gguf");
    auto written = write_random_model(*spec, path);
    ASSERT_TRUE(written.ok()) << written.error().message;
    auto ref = load_reference(path);
    ASSERT_TRUE(ref);
    {
        auto file = GgufFile::open(path);
        ASSERT_TRUE(file.ok());
        EXPECT_EQ((*file)->tensor("blk.0.attn_k.weight")->dtype, DType::BF16);
        EXPECT_EQ((*file)->tensor("blk.1.ffn_up.weight")->dtype, DType::F32);
    }
    const auto tokens = test_tokens(20, ref->hparams().n_vocab);
    const RefRows want = reference_logits(ref, tokens);
    // The tolerances of the single-type tests above; native mixes all three.
    const std::pair<Precision, double> cases[] = {{Precision::kFP32, kFp32Tolerance},
                                                  {Precision::kFP16, 1e-2},
                                                  {Precision::kBF16, 5e-2},
                                                  {Precision::kNative, 5e-2}};
    for (const bool huge_pages : {true, false}) {
        auto m = load_model(path, DType::F32, 0, [&](ModelParams& p) { p.weights_in_huge_pages = huge_pages; });
        ASSERT_TRUE(m);
        for (const auto& [precision, tolerance] : cases) {
            SCOPED_TRACE(fmt::format("{}, huge pages {}", precision_name(precision), huge_pages));
            ASSERT_TRUE(m->prepare_precision(precision).ok());
            const Comparison c = compare(decode_chunked(*m, tokens, precision, 10, 1), want);
            std::printf("[ mixed types, huge pages %d ] %s: max relative error %.3g, argmax agrees on %zu/%zu\n",
                        huge_pages, precision_name(precision), c.max_error, c.argmax_agree, c.rows);
            EXPECT_LE(c.max_error, tolerance) << "worst row " << c.worst_row;
            EXPECT_GE(c.argmax_agree * 10, c.rows * 8);
        }
    }
}

TEST(MixedTypesVsReference, TheWriterRejectsOverridesItCannotStore) {
    auto spec = random_model_shape("tiny-llama-oddff");
    ASSERT_TRUE(spec.has_value());
    spec->dtype = DType::F32;
    spec->tensor_types = {{"blk.0.attn_qq.weight", DType::F16}};
    auto s = validate_random_model_spec(*spec);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("'blk.0.attn_qq.weight', which this model does not have"), std::string::npos);
    spec->tensor_types = {{"blk.0.ffn_down.weight", DType::Q8_0}};  // rows of n_ff = 100
    s = validate_random_model_spec(*spec);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.error().message.find("rows of 100 cannot be stored as"), std::string::npos) << s.error().message;
    spec->tensor_types = {{"blk.0.attn_norm.weight", DType::F16}};
    EXPECT_FALSE(validate_random_model_spec(*spec).ok());
}

// ---------------------------------------------------------------------------
// stories260K: a real trained model, and llama.cpp's greedy output for it.

struct Stories {
    std::string model_path;
    nlohmann::json prompts;
};

std::optional<Stories> stories() {
    const std::string shared = ASSISTD_SHARED_DIR;
    Stories s{shared + "/models/stories260K.gguf", {}};
    const std::string json_path = shared + "/reference/llamacpp-stories260K.json";
    if (!std::filesystem::exists(s.model_path) || !std::filesystem::exists(json_path)) return std::nullopt;
    std::ifstream in(json_path);
    s.prompts = nlohmann::json::parse(in, nullptr, false);
    if (s.prompts.is_discarded() || !s.prompts.is_array()) return std::nullopt;
    return s;
}

#define REQUIRE_STORIES(var)                                                               \
    auto var = stories();                                                                  \
    if (!var) GTEST_SKIP() << "stories260K.gguf or its llama.cpp reference is not in " \
                           << ASSISTD_SHARED_DIR;

std::vector<TokenId> tokens_of(const nlohmann::json& j) { return j.get<std::vector<TokenId>>(); }

// Greedy continuation: the prompt in one decode, then one token per decode.
std::vector<TokenId> model_greedy(Model& m, const std::vector<TokenId>& prompt, size_t n, Precision precision) {
    std::vector<TokenId> out;
    auto seq = m.create_sequence();
    EXPECT_TRUE(seq.ok());
    if (!seq) return out;
    BatchEntry e{*seq, prompt, false};
    auto logits = m.decode(std::span(&e, 1), precision);
    while (logits.ok() && out.size() < n) {
        out.push_back(static_cast<TokenId>(argmax(*logits)));
        if (out.size() == n) break;
        e = BatchEntry{*seq, std::span(&out.back(), 1), false};
        logits = m.decode(std::span(&e, 1), precision);
    }
    EXPECT_TRUE(logits.ok()) << (logits.ok() ? "" : logits.error().message);
    m.free_sequence(*seq);
    return out;
}

size_t first_divergence(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
    size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    return i;
}

// Validates the reference itself against llama.cpp: if this fails, the other
// comparisons mean nothing.
TEST(Stories260K, ReferenceReproducesLlamaCppGreedyAndTop5) {
    REQUIRE_STORIES(s);
    auto ref = load_reference(s->model_path);
    ASSERT_TRUE(ref);
    for (const auto& p : s->prompts) {
        SCOPED_TRACE(p["prompt"].get<std::string>());
        const auto prompt = tokens_of(p["prompt_tokens"]);
        const auto want = tokens_of(p["greedy_tokens"]);
        ReferenceSequence seq(ref);
        std::vector<double> row = seq.append(prompt).back();
        // log-softmax of the first step against llama.cpp's top-5 log-probabilities
        // (llama.cpp keeps K/V in F16 by default: its figures are off by a few 1e-3).
        double mx = *std::max_element(row.begin(), row.end()), sum = 0;
        for (double v : row) sum += std::exp(v - mx);
        for (const auto& t : p["first_token_top5"]) {
            const double lp = row[t["id"].get<size_t>()] - mx - std::log(sum);
            EXPECT_NEAR(lp, t["logprob"].get<double>(), 1e-2) << "token " << t["id"];
        }
        std::vector<TokenId> got;
        while (got.size() < want.size()) {
            got.push_back(static_cast<TokenId>(argmax(std::span<const double>(row))));
            row = seq.append(std::span(&got.back(), 1)).back();
        }
        EXPECT_EQ(got, want) << "first divergence at " << first_divergence(got, want);
    }
}

TEST(Stories260K, LogitsMatchReferenceAtFp32) {
    REQUIRE_STORIES(s);
    auto ref = load_reference(s->model_path);
    ASSERT_TRUE(ref);
    auto m = load_model(s->model_path);
    ASSERT_TRUE(m);
    for (const auto& p : s->prompts) {
        SCOPED_TRACE(p["prompt"].get<std::string>());
        // The prompt followed by llama.cpp's continuation: ~70 positions of real text.
        auto tokens = tokens_of(p["prompt_tokens"]);
        for (TokenId t : tokens_of(p["greedy_tokens"])) tokens.push_back(t);
        const RefRows want = reference_logits(ref, tokens);
        const Comparison c = compare(decode_chunked(*m, tokens, Precision::kFP32, 16, 16), want);
        EXPECT_LE(c.max_error, kFp32Tolerance) << "worst row " << c.worst_row;
        EXPECT_EQ(c.argmax_agree, c.rows);
    }
}

// With the K/V cache in F32 and in F16 (the default, as llama.cpp's).
TEST(Stories260K, GreedyMatchesLlamaCppExactlyAtFp32) {
    REQUIRE_STORIES(s);
    for (DType kv : {DType::F32, DType::F16}) {
        auto m = load_model(s->model_path, kv);
        ASSERT_TRUE(m);
        for (const auto& p : s->prompts) {
            SCOPED_TRACE(fmt::format("kv {} '{}'", dtype_name(kv), p["prompt"].get<std::string>()));
            const auto want = tokens_of(p["greedy_tokens"]);
            const auto got = model_greedy(*m, tokens_of(p["prompt_tokens"]), want.size(), Precision::kFP32);
            EXPECT_EQ(got, want) << "first divergence at " << first_divergence(got, want);
        }
    }
}

// Half precision may eventually pick another token where two are nearly tied;
// the first 32 must agree.
TEST(Stories260K, GreedyAtFp16AndBf16AgreesForAtLeast32Tokens) {
    REQUIRE_STORIES(s);
    auto m = load_model(s->model_path, DType::F16);
    ASSERT_TRUE(m);
    for (Precision precision : {Precision::kFP16, Precision::kBF16}) {
        for (const auto& p : s->prompts) {
            const std::string prompt = p["prompt"].get<std::string>();
            SCOPED_TRACE(fmt::format("{} '{}'", precision_name(precision), prompt));
            const auto want = tokens_of(p["greedy_tokens"]);
            const auto got = model_greedy(*m, tokens_of(p["prompt_tokens"]), want.size(), precision);
            const size_t div = first_divergence(got, want);
            std::printf("[ stories260K %s ] '%s': %s\n", precision_name(precision), prompt.c_str(),
                        div == want.size() ? "all 64 tokens agree"
                                           : fmt::format("first divergence at token {}", div).c_str());
            EXPECT_GE(div, 32u);
        }
    }
}

}  // namespace
}  // namespace assistd::engine
