#pragma once
// The engine's public face: load a llama-family GGUF model, create sequences,
// feed tokens in batches, get logits, sample. Nothing here knows about HTTP
// or sessions; the server drives it through this header alone.
//
//   auto model = Model::load({.path = "stories260K.gguf"});
//   SequenceId s = model.value()->create_sequence();
//   auto logits = model.value()->decode({{s, prompt_ids}}, Precision::kFP32);
//   Sampler sampler({.temperature = 0});  TokenId t = sampler.sample(*logits, history);
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/chat_template.h"
#include "engine/dtype.h"
#include "engine/tokenizer.h"

namespace assistd::engine {

class GgufFile;

// The arithmetic a forward pass runs at. kNative computes with the weights in
// the format the file stores them (Q8_0 files run the int8 kernels).
enum class Precision { kNative, kFP32, kFP16, kBF16 };
const char* precision_name(Precision p);
std::optional<Precision> precision_from_name(std::string_view name);  // "fp32", "fp16", "bf16", "native"
// The type a weight stored as `stored_type` is computed in at precision p.
DType precision_storage_type(Precision p, DType stored_type);

enum class Architecture { kLlama, kQwen2 };

struct ModelParams {
    std::string path;
    int n_threads = 0;                  // 0: one per online core
    size_t n_ctx = 0;                   // 0: the model's training context (capped at 8192)
    size_t max_sequences = 64;          // sequences alive at once
    size_t max_batch_tokens = 512;      // tokens one decode() call may carry (chunk longer prompts)
    size_t kv_block_tokens = 16;        // tokens per KV block
    size_t kv_cache_tokens = 0;         // total KV capacity in tokens; 0: n_ctx * 4
    DType kv_type = DType::F16;         // F16 or F32
    size_t converted_weights_budget = size_t{8} << 30;  // bytes of lazily converted weights kept
    // A model whose weights are smaller runs small batches (up to 16 tokens)
    // on the calling thread alone: its phases are too short to pay for the
    // barriers, and a spinning partner collapses on an oversubscribed machine.
    size_t min_parallel_weight_bytes = size_t{4} << 20;
    // Keep the matrices of each precision in one block of anonymous memory
    // advised as transparent huge pages, copying even those the file already
    // stores in the needed type (when that fits in converted_weights_budget).
    // Decode streams every weight once per step: on 2 MiB pages the hardware
    // prefetcher is not stopped at every 4 KiB page and the TLB holds the
    // whole model (+15-20% read bandwidth measured). Costs a copy at first use
    // and the resident bytes. Off: native weights are read from the mapping.
    bool weights_in_huge_pages = true;
};

struct ModelInfo {
    Architecture arch = Architecture::kLlama;
    std::string arch_name;
    std::string name;
    DType file_type = DType::F32;       // type of most weights in the file
    size_t n_vocab = 0, n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_ff = 0;
    size_t head_dim = 0, n_rot = 0, n_ctx_train = 0, n_ctx = 0;
    float rms_eps = 1e-5f;
    float rope_theta = 10000.f;
    float rope_freq_scale = 1.f;        // linear scaling (1 / factor)
    bool rope_neox = false;             // rotation style: pairs (i, i+d/2) instead of (2i, 2i+1)
    bool tied_output = false;
    uint64_t n_params = 0;
    uint64_t weight_bytes = 0;          // bytes of weights in the file
};

using SequenceId = int32_t;

struct BatchEntry {
    SequenceId seq = -1;
    std::span<const TokenId> tokens;    // appended after what the sequence holds
    bool all_logits = false;            // logits for every token, not only the last
};

struct DecodeStats {
    size_t tokens = 0;
    double seconds = 0;
};

class Model {
public:
    virtual ~Model() = default;
    // Every problem with the file (missing, not GGUF, truncated, unsupported
    // type or architecture, missing tensor, wrong shape) is a clear error.
    static Result<std::unique_ptr<Model>> load(const ModelParams& params);

    virtual const ModelInfo& info() const = 0;
    virtual const Tokenizer& tokenizer() const = 0;
    virtual const ChatTemplate& chat_template() const = 0;
    virtual const GgufFile& file() const = 0;
    virtual int n_threads() const = 0;

    // Sequences own KV blocks; kResourceExhausted when none are left.
    virtual Result<SequenceId> create_sequence() = 0;
    virtual void free_sequence(SequenceId seq) = 0;
    virtual size_t sequence_length(SequenceId seq) const = 0;
    // Forgets the KV of positions >= n_tokens (to re-prefill after a rollback).
    virtual Status truncate_sequence(SequenceId seq, size_t n_tokens) = 0;
    // A new sequence sharing the first n_tokens of `src` (blocks shared, copy on write).
    virtual Result<SequenceId> fork_sequence(SequenceId src, size_t n_tokens) = 0;
    virtual size_t free_kv_blocks() const = 0;
    virtual size_t total_kv_blocks() const = 0;
    virtual size_t kv_block_tokens() const = 0;   // positions per KV block
    virtual size_t max_sequences() const = 0;     // sequence slots in all

    // One forward pass over several sequences at once. Returns logits, one
    // row of n_vocab floats per requested position, in entry order (the last
    // token of each entry, or all of its tokens when all_logits). The span is
    // valid until the next decode(). Errors: unknown sequence, context
    // overflow (kOutOfRange), too many tokens for one call, token id out of range.
    virtual Result<std::span<const float>> decode(std::span<const BatchEntry> batch, Precision precision) = 0;

    // Prepares the weights of a precision ahead of use (conversion is
    // otherwise lazy, on the first decode at that precision).
    virtual Status prepare_precision(Precision precision) = 0;

    // A sequence's computed context, portable to another instance of the same
    // model (kv_blob.h): positions [begin, end) of `seq`, with `tokens`, their
    // ids (the engine does not keep them), recorded for the importer to check.
    virtual Result<std::string> export_kv(SequenceId seq, size_t begin, size_t end,
                                          std::span<const TokenId> tokens) = 0;
    // Appends an exported blob's positions to `seq` (whose length must be the
    // blob's first position) and returns their token ids. A blob of another
    // model, KV type or RoPE setting, or a damaged one, is refused and nothing
    // is written.
    virtual Result<std::vector<TokenId>> import_kv(SequenceId seq, std::string_view blob) = 0;
    // What export_kv tags its blobs with: the model's weights, shapes, RoPE and KV type.
    virtual uint64_t kv_fingerprint() const = 0;
};

struct SamplerParams {
    float temperature = 0.f;            // 0: greedy
    int top_k = 0;                      // 0: off
    float top_p = 1.f;                  // 1: off
    float min_p = 0.f;                  // 0: off
    float repetition_penalty = 1.f;     // 1: off
    size_t repetition_window = 64;      // last N tokens considered
    uint64_t seed = 0;
};

// Reproducible sampling: the same seed and logits give the same tokens.
class Sampler {
public:
    explicit Sampler(const SamplerParams& params, size_t n_vocab_hint = 0);
    TokenId sample(std::span<const float> logits, std::span<const TokenId> history);
    const SamplerParams& params() const { return params_; }

private:
    SamplerParams params_;
    uint64_t rng_state_;
    std::vector<std::pair<float, TokenId>> candidates_;  // reused: no allocation per token
    std::vector<float> scratch_;
};

// Finds the earliest occurrence of any stop string in text[from...]; npos if none.
// Also reports how many trailing bytes could still begin a stop string, so a
// streamer holds them back instead of emitting text it may have to retract.
struct StopMatch {
    size_t position = std::string::npos;
    size_t hold_back = 0;
};
StopMatch find_stop(std::string_view text, std::span<const std::string> stops);

}  // namespace assistd::engine
