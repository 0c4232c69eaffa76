#pragma once
// A deliberately naive llama/qwen2 forward pass for tests: scalar loops,
// double accumulation and activations, weights dequantized straight from the
// GGUF file. Written from the architecture's math alone (no engine kernels,
// no model code), so the engine's output can be checked against it.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/gguf.h"

namespace assistd::reftest {

struct ReferenceHParams {
    std::string arch;  // "llama" or "qwen2"
    size_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0;
    size_t head_dim = 0, n_rot = 0;
    double rms_eps = 1e-5, rope_theta = 10000.0;
    bool rope_neox = false;  // qwen2: pairs (i, i + n_rot/2); llama: pairs (2i, 2i+1)
    bool tied_output = false;
};

// The model's weights as float, read once from the file (small models only).
class ReferenceModel {
public:
    static Result<std::shared_ptr<const ReferenceModel>> load(const engine::GgufFile& file);
    static Result<std::shared_ptr<const ReferenceModel>> load(const std::string& path);

    const ReferenceHParams& hparams() const { return hp_; }

    struct Layer {
        std::vector<float> attn_norm, wq, wk, wv, bq, bk, bv, wo, ffn_norm, w_gate, w_up, w_down;
    };
    std::vector<float> token_embd, output_norm, output;  // output empty when tied
    std::vector<Layer> layers;

private:
    ReferenceHParams hp_;
};

// One sequence: keeps every position's K and V, so tokens can be appended in
// any chunking and the logits do not depend on it.
class ReferenceSequence {
public:
    explicit ReferenceSequence(std::shared_ptr<const ReferenceModel> model);
    // Logits (n_vocab each) for every appended token, in order.
    std::vector<std::vector<double>> append(std::span<const int32_t> tokens);
    size_t length() const { return n_past_; }

private:
    std::vector<double> forward_one(int32_t token);
    std::shared_ptr<const ReferenceModel> m_;
    size_t n_past_ = 0;
    std::vector<std::vector<double>> k_cache_, v_cache_;  // per layer: position-major
};

// Convenience: logits for every position of `tokens` from an empty sequence.
std::vector<std::vector<double>> reference_logits(std::shared_ptr<const ReferenceModel> model,
                                                  std::span<const int32_t> tokens);

// max_i |got_i - want_i| / max_i |want_i|: the error relative to the row's
// largest logit (a per-element relative error means nothing near zero).
double row_relative_error(std::span<const float> got, std::span<const double> want);

template <typename T>
size_t argmax(std::span<const T> v) {
    size_t best = 0;
    for (size_t i = 1; i < v.size(); ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

// A fresh directory under $TMPDIR (or /tmp), removed by the destructor.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

}  // namespace assistd::reftest
