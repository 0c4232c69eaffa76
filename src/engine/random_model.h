#pragma once
// Random-weight GGUF models of real shapes, for tests and benchmarks: the same
// tensor names, layouts and metadata as llama.cpp's converter writes, weights
// from a seeded PRNG scaled so activations stay sane through many layers.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/dtype.h"

namespace assistd::engine {

struct RandomModelSpec {
    std::string arch = "llama";  // or "qwen2" (adds attn_q/k/v bias tensors, BPE vocab, neox rope)
    std::string name;            // general.name; empty: "random-<arch>"
    size_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0, n_ctx = 2048;
    float rope_theta = 10000.f, rms_eps = 1e-5f;
    bool tied_output = false;    // no output.weight: the head reuses token_embd
    DType dtype = DType::F16;    // type of the 2-D weight matrices; norms and biases stay F32
    // Per-tensor types by GGUF name ("blk.0.attn_k.weight"), overriding dtype:
    // files that mix types, as some converters write.
    std::map<std::string, DType> tensor_types;
    uint64_t seed = 1;
};

// Known shapes: "smollm2-135m", "llama-1b", "qwen2-0.5b" and small ones for
// tests ("tiny-llama", "tiny-qwen2", "tiny-llama-oddff" whose n_ff is not a
// multiple of 32, so float types only).
std::optional<RandomModelSpec> random_model_shape(std::string_view name);
std::vector<std::string> random_model_shape_names();

// Checks the spec is a model the engine can load (head sizes divide, rows fit
// the dtype's block size, ...); the message says which field is wrong.
Status validate_random_model_spec(const RandomModelSpec& spec);

// Writes the model to `path`, streaming one tensor at a time. The same spec
// (seed included) always gives the same bytes.
Status write_random_model(const RandomModelSpec& spec, const std::string& path);

// GGUF general.file_type for a dtype (0 F32, 1 F16, 7 Q8_0, 32 BF16).
uint32_t gguf_file_type(DType dtype);

}  // namespace assistd::engine
