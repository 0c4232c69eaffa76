#pragma once
// Private to the engine: reads a llama-family GGUF's hyper-parameters and
// checks that every tensor the forward pass needs is present, supported and
// of the right shape. Keeps the forward pass free of validation code.
#include <string>
#include <vector>

#include "common/result.h"
#include "engine/engine.h"
#include "engine/gguf.h"

namespace assistd::engine {

struct LayerTensors {
    const GgufTensor* attn_norm = nullptr;
    const GgufTensor* wq = nullptr;
    const GgufTensor* wk = nullptr;
    const GgufTensor* wv = nullptr;
    const GgufTensor* wo = nullptr;
    const GgufTensor* bq = nullptr;  // qwen2 only
    const GgufTensor* bk = nullptr;
    const GgufTensor* bv = nullptr;
    const GgufTensor* ffn_norm = nullptr;
    const GgufTensor* w_gate = nullptr;
    const GgufTensor* w_up = nullptr;
    const GgufTensor* w_down = nullptr;
};

struct ModelTensors {
    const GgufTensor* token_embd = nullptr;
    const GgufTensor* output_norm = nullptr;
    const GgufTensor* output = nullptr;      // token_embd when tied
    const GgufTensor* rope_freqs = nullptr;  // optional per-frequency factors (Llama 3.1 style)
    std::vector<LayerTensors> layers;
};

// Fills `info` and `tensors` from the file, or says what is wrong with it.
Status read_model_description(const GgufFile& file, size_t n_ctx_requested, ModelInfo& info, ModelTensors& tensors);

}  // namespace assistd::engine
