#pragma once
// Options shared by every subcommand that loads a model.
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/engine.h"

namespace assistd::cli {

struct ModelOptions {
    std::string path;
    std::string precision = "native";
    int threads = 0;
    size_t ctx_size = 0;
    size_t batch_tokens = 512;
    std::string kv_type = "f16";
    size_t kv_cache_tokens = 0;  // 0: the engine's default (4 contexts)
    bool weights_huge_pages = true;
};

void add_model_options(CLI::App& cmd, ModelOptions& o);
// Parses --precision; prints a clear message and returns nullopt when invalid.
std::optional<engine::Precision> parse_precision(const std::string& name);
// Loads the model; on failure prints "assistd <command>: <reason>" and returns nullptr.
std::unique_ptr<engine::Model> load_model(const ModelOptions& o, const char* command, size_t max_sequences = 8);

}  // namespace assistd::cli
