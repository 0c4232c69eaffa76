#include "engine/random_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/random.h"
#include "engine/gguf_writer.h"
#include "engine/vocab_builder.h"

namespace assistd::engine {
namespace {


uint64_t fnv1a(std::string_view s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
    return h;
}

// Irwin-Hall with four 16-bit uniforms from one 64-bit draw: mean 0, std 1,
// bounded by +-2*sqrt(3). Cheap, and close enough to a normal for weights.
inline float normalish(uint64_t& state) {
    const uint64_t r = splitmix64(state);
    const uint32_t sum = static_cast<uint32_t>(r & 0xffff) + static_cast<uint32_t>((r >> 16) & 0xffff) +
                         static_cast<uint32_t>((r >> 32) & 0xffff) + static_cast<uint32_t>(r >> 48);
    constexpr float kScale = 1.7320508f / 65536.f;  // sqrt(12 / 4) per unit of 2^16
    return (static_cast<float>(sum) - 2.f * 65535.f) * kScale;
}

// How a tensor's values are drawn: mean + std * normalish().
struct TensorPlan {
    std::string name;
    DType dtype;
    std::vector<uint64_t> dims;
    float mean;
    float std;
};

std::vector<TensorPlan> plan_tensors(const RandomModelSpec& s) {
    const size_t head_dim = s.n_embd / s.n_head;
    const size_t q_dim = s.n_head * head_dim, kv_dim = s.n_head_kv * head_dim;
    const float inv_sqrt_embd = 1.f / std::sqrt(static_cast<float>(s.n_embd));
    // Embeddings and head at 2/sqrt(n_embd): the logits of a normalised state
    // then have std ~2 (peaked enough for varied argmaxes, far from overflow),
    // whether the head is tied or not.
    const float embd_std = 2.f * inv_sqrt_embd;
    const bool bias = s.arch == "qwen2";
    // Layer outputs larger than the embedding: with a tied head, a residual
    // dominated by the current token's own embedding would make every token
    // predict itself (greedy decoding stuck on one token).
    constexpr float kOutScale = 2.f;
    std::vector<TensorPlan> p;
    p.push_back({"token_embd.weight", s.dtype, {s.n_embd, s.n_vocab}, 0.f, embd_std});
    for (size_t l = 0; l < s.n_layer; ++l) {
        const std::string b = fmt::format("blk.{}.", l);
        p.push_back({b + "attn_norm.weight", DType::F32, {s.n_embd}, 1.f, 0.1f});
        p.push_back({b + "attn_q.weight", s.dtype, {s.n_embd, q_dim}, 0.f, inv_sqrt_embd});
        p.push_back({b + "attn_k.weight", s.dtype, {s.n_embd, kv_dim}, 0.f, inv_sqrt_embd});
        p.push_back({b + "attn_v.weight", s.dtype, {s.n_embd, kv_dim}, 0.f, inv_sqrt_embd});
        if (bias) {
            // Small: a V bias adds the same vector at every position, which would
            // otherwise pull every state (and the argmax) in one direction.
            p.push_back({b + "attn_q.bias", DType::F32, {q_dim}, 0.f, 0.2f});
            p.push_back({b + "attn_k.bias", DType::F32, {kv_dim}, 0.f, 0.2f});
            p.push_back({b + "attn_v.bias", DType::F32, {kv_dim}, 0.f, 0.1f});
        }
        p.push_back({b + "attn_output.weight", s.dtype, {q_dim, s.n_embd}, 0.f,
                     kOutScale / std::sqrt(static_cast<float>(q_dim))});
        p.push_back({b + "ffn_norm.weight", DType::F32, {s.n_embd}, 1.f, 0.1f});
        p.push_back({b + "ffn_gate.weight", s.dtype, {s.n_embd, s.n_ff}, 0.f, inv_sqrt_embd});
        p.push_back({b + "ffn_up.weight", s.dtype, {s.n_embd, s.n_ff}, 0.f, inv_sqrt_embd});
        p.push_back({b + "ffn_down.weight", s.dtype, {s.n_ff, s.n_embd}, 0.f,
                     kOutScale / std::sqrt(static_cast<float>(s.n_ff))});
    }
    p.push_back({"output_norm.weight", DType::F32, {s.n_embd}, 1.f, 0.1f});
    if (!s.tied_output) p.push_back({"output.weight", s.dtype, {s.n_embd, s.n_vocab}, 0.f, embd_std});
    for (auto& t : p) {
        auto it = s.tensor_types.find(t.name);
        if (it != s.tensor_types.end()) t.dtype = it->second;
    }
    return p;
}

void fill_tensor(const TensorPlan& t, uint64_t seed, std::vector<uint8_t>& out) {
    const size_t cols = t.dims[0];
    size_t rows = 1;
    for (size_t i = 1; i < t.dims.size(); ++i) rows *= t.dims[i];
    const size_t row_bytes = dtype_row_bytes(t.dtype, cols);
    out.resize(rows * row_bytes);
    // Each tensor has its own stream: its values do not depend on the order of writing.
    uint64_t state = seed ^ fnv1a(t.name);
    splitmix64(state);
    std::vector<float> row(cols);
    for (size_t r = 0; r < rows; ++r) {
        for (size_t c = 0; c < cols; ++c) row[c] = t.mean + t.std * normalish(state);
        quantize_row(t.dtype, row.data(), out.data() + r * row_bytes, cols);
    }
}

RandomModelSpec shape(std::string arch, std::string name, size_t vocab, size_t embd, size_t layers, size_t heads,
                      size_t kv_heads, size_t ff, size_t ctx, float theta, float eps, bool tied) {
    RandomModelSpec s;
    s.arch = std::move(arch);
    s.name = std::move(name);
    s.n_vocab = vocab;
    s.n_embd = embd;
    s.n_layer = layers;
    s.n_head = heads;
    s.n_head_kv = kv_heads;
    s.n_ff = ff;
    s.n_ctx = ctx;
    s.rope_theta = theta;
    s.rms_eps = eps;
    s.tied_output = tied;
    return s;
}

}  // namespace

std::vector<std::string> random_model_shape_names() {
    return {"smollm2-135m", "llama-1b", "qwen2-0.5b", "tiny-llama", "tiny-qwen2", "tiny-llama-oddff"};
}

std::optional<RandomModelSpec> random_model_shape(std::string_view name) {
    // Real shapes: the figures in ../shared/reference/llamacpp-bench.md were
    // taken with a separate output head (pass --tied for the tied variant).
    if (name == "smollm2-135m")
        return shape("llama", "smollm2-135m (random)", 49152, 576, 30, 9, 3, 1536, 8192, 100000.f, 1e-5f, false);
    if (name == "llama-1b")
        return shape("llama", "llama-1b (random)", 32000, 2048, 16, 32, 8, 8192, 2048, 10000.f, 1e-5f, false);
    if (name == "qwen2-0.5b")
        return shape("qwen2", "qwen2-0.5b (random)", 151936, 896, 24, 14, 2, 4864, 32768, 1000000.f, 1e-6f, true);
    // Small shapes for tests: seconds to write, milliseconds to run.
    if (name == "tiny-llama")
        return shape("llama", "tiny-llama (random)", 512, 64, 2, 4, 2, 96, 512, 10000.f, 1e-5f, false);
    if (name == "tiny-qwen2")
        return shape("qwen2", "tiny-qwen2 (random)", 384, 64, 2, 4, 2, 96, 512, 1000000.f, 1e-6f, false);
    // n_ff 100 is not a multiple of 32 (float types only); 3 query heads per KV head.
    if (name == "tiny-llama-oddff")
        return shape("llama", "tiny-llama-oddff (random)", 512, 48, 3, 3, 1, 100, 256, 10000.f, 1e-5f, false);
    return std::nullopt;
}

uint32_t gguf_file_type(DType dtype) {
    switch (dtype) {
        case DType::F32: return 0;
        case DType::F16: return 1;
        case DType::Q8_0: return 7;
        case DType::BF16: return 32;
    }
    return 0;
}

Status validate_random_model_spec(const RandomModelSpec& s) {
    auto bad = [](std::string msg) { return make_error(ErrorCode::kInvalidArgument, std::move(msg)); };
    if (s.arch != "llama" && s.arch != "qwen2")
        return bad(fmt::format("unknown architecture '{}' (expected llama or qwen2)", s.arch));
    if (s.n_vocab == 0 || s.n_embd == 0 || s.n_layer == 0 || s.n_head == 0 || s.n_head_kv == 0 || s.n_ff == 0 ||
        s.n_ctx == 0)
        return bad("every size of the model (vocab, embedding, layers, heads, KV heads, FFN, context) must be > 0");
    const bool bpe = s.arch == "qwen2";
    const size_t min_vocab = bpe ? kMinSyntheticByteBpeVocab : kMinSyntheticSentencePieceVocab;
    if (s.n_vocab < min_vocab)
        return bad(fmt::format("n_vocab {} is too small for the synthetic {} vocabulary: at least {}", s.n_vocab,
                               bpe ? "byte-BPE" : "SentencePiece", min_vocab));
    if (s.n_embd % s.n_head != 0)
        return bad(fmt::format("n_embd {} is not a multiple of n_head {}", s.n_embd, s.n_head));
    if ((s.n_embd / s.n_head) % 2 != 0)
        return bad(fmt::format("head size {} is odd: rotary embedding needs pairs", s.n_embd / s.n_head));
    if (s.n_head % s.n_head_kv != 0)
        return bad(fmt::format("n_head {} is not a multiple of n_head_kv {}", s.n_head, s.n_head_kv));
    const size_t block = dtype_block_elems(s.dtype);
    if (s.n_embd % block != 0 || s.n_ff % block != 0)
        return bad(fmt::format("{} needs rows that are multiples of {}: n_embd {} and n_ff {} are not; "
                               "use a float type (f32, f16, bf16) for this shape",
                               dtype_name(s.dtype), block, s.n_embd, s.n_ff));
    if (!(s.rope_theta > 0.f) || !(s.rms_eps > 0.f)) return bad("rope_theta and rms_eps must be > 0");
    if (!s.tensor_types.empty()) {
        const std::vector<TensorPlan> plan = plan_tensors(s);
        for (const auto& [name, type] : s.tensor_types) {
            // Named in the capture: clang 14 (the fuzz build) cannot capture a structured binding.
            auto t = std::find_if(plan.begin(), plan.end(),
                                  [&wanted = name](const TensorPlan& p) { return p.name == wanted; });
            if (t == plan.end()) return bad(fmt::format("tensor_types names '{}', which this model does not have", name));
            if (t->dims.size() < 2) return bad(fmt::format("'{}' is a vector: it stays F32", name));
            if (t->dims[0] % dtype_block_elems(type) != 0)
                return bad(fmt::format("'{}' rows of {} cannot be stored as {}", name, t->dims[0], dtype_name(type)));
        }
    }
    return {};
}

Status write_random_model(const RandomModelSpec& spec, const std::string& path) {
    if (auto s = validate_random_model_spec(spec); !s) return s;
    const std::string& a = spec.arch;
    const size_t head_dim = spec.n_embd / spec.n_head;
    GgufWriter w;
    w.set_string("general.architecture", a);
    w.set_string("general.name", spec.name.empty() ? "random-" + a : spec.name);
    w.set_u32("general.file_type", gguf_file_type(spec.dtype));
    if (spec.dtype == DType::Q8_0) w.set_u32("general.quantization_version", 2);
    w.set_u32(a + ".context_length", static_cast<uint32_t>(spec.n_ctx));
    w.set_u32(a + ".embedding_length", static_cast<uint32_t>(spec.n_embd));
    w.set_u32(a + ".block_count", static_cast<uint32_t>(spec.n_layer));
    w.set_u32(a + ".feed_forward_length", static_cast<uint32_t>(spec.n_ff));
    w.set_u32(a + ".attention.head_count", static_cast<uint32_t>(spec.n_head));
    w.set_u32(a + ".attention.head_count_kv", static_cast<uint32_t>(spec.n_head_kv));
    w.set_f32(a + ".attention.layer_norm_rms_epsilon", spec.rms_eps);
    w.set_f32(a + ".rope.freq_base", spec.rope_theta);
    w.set_u32(a + ".rope.dimension_count", static_cast<uint32_t>(head_dim));
    w.set_u32(a + ".vocab_size", static_cast<uint32_t>(spec.n_vocab));
    write_synthetic_vocab(w, a == "qwen2" ? SyntheticVocabKind::kByteBpe : SyntheticVocabKind::kSentencePiece,
                          spec.n_vocab);

    const std::vector<TensorPlan> plan = plan_tensors(spec);
    const size_t first = w.tensor_count();  // the vocab builder adds none, but do not assume it
    for (const auto& t : plan) w.add_tensor_deferred(t.name, t.dtype, t.dims);
    uint64_t seed_state = spec.seed;
    const uint64_t seed = splitmix64(seed_state);
    return w.write_streaming(path, [&](size_t index, std::vector<uint8_t>& out) -> Status {
        if (index < first || index - first >= plan.size())
            return make_error(ErrorCode::kInternal, fmt::format("unexpected deferred tensor {}", index));
        fill_tensor(plan[index - first], seed, out);
        return {};
    });
}

}  // namespace assistd::engine
