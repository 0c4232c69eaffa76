#include "cli/model_options.h"

#include <cstdio>

namespace assistd::cli {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
    cmd.add_option("-m,--model", o.path, "Path of a GGUF model file")->required();
    cmd.add_option("--precision", o.precision, "fp32, fp16, bf16, or native (the file's own types)")
        ->capture_default_str();
    cmd.add_option("-t,--threads", o.threads, "Compute threads (0: one per core)")->capture_default_str();
    cmd.add_option("-c,--ctx-size", o.ctx_size, "Context length in tokens (0: the model's, at most 8192)")
        ->capture_default_str();
    cmd.add_option("-b,--batch-tokens", o.batch_tokens, "Tokens per forward pass (prefill chunk)")
        ->capture_default_str()
        ->check(CLI::Range(1, 8192));
    cmd.add_option("--kv-type", o.kv_type, "KV cache element type: f16 or f32")->capture_default_str();
    cmd.add_option("--kv-cache-tokens", o.kv_cache_tokens,
                   "KV cache capacity in tokens across all sequences (0: four times the context)")
        ->capture_default_str();
    cmd.add_option("--weights-huge-pages", o.weights_huge_pages,
                   "Copy the weights into transparent huge pages at first use (faster decode; the copy is "
                   "resident memory): true or false")
        ->capture_default_str();
}

std::optional<engine::Precision> parse_precision(const std::string& name) {
    auto p = engine::precision_from_name(name);
    if (!p) std::fprintf(stderr, "assistd: unknown precision '%s' (use fp32, fp16, bf16 or native)\n", name.c_str());
    return p;
}

std::unique_ptr<engine::Model> load_model(const ModelOptions& o, const char* command, size_t max_sequences) {
    engine::ModelParams p;
    p.path = o.path;
    p.n_threads = o.threads;
    p.n_ctx = o.ctx_size;
    p.max_batch_tokens = o.batch_tokens;
    p.max_sequences = max_sequences;
    p.kv_cache_tokens = o.kv_cache_tokens;
    p.weights_in_huge_pages = o.weights_huge_pages;
    auto kv = engine::dtype_from_name(o.kv_type);
    if (!kv || (*kv != engine::DType::F16 && *kv != engine::DType::F32)) {
        std::fprintf(stderr, "assistd %s: --kv-type must be f16 or f32\n", command);
        return nullptr;
    }
    p.kv_type = *kv;
    auto m = engine::Model::load(p);
    if (!m) {
        std::fprintf(stderr, "assistd %s: %s\n", command, m.error().message.c_str());
        return nullptr;
    }
    return std::move(*m);
}

}  // namespace assistd::cli
