// `assistd model random` writes a random-weight GGUF model of a real shape;
// `assistd model info` describes any GGUF model file.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cli/commands.h"
#include "engine/chat_template.h"
#include "engine/dtype.h"
#include "engine/gguf.h"
#include "engine/random_model.h"

namespace assistd::cli {
namespace {

using engine::DType;
using engine::GgufFile;

struct RandomOptions {
    std::string shape;
    std::string dtype = "f16";
    std::string out;
    std::string arch;
    uint64_t seed = 1;
    bool tied = false;
};

std::string join(const std::vector<std::string>& v, std::string_view sep) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? std::string(sep) : std::string()) + v[i];
    return s;
}

int run_random(const RandomOptions& o) {
    auto spec = engine::random_model_shape(o.shape);
    if (!spec) {
        std::fprintf(stderr, "assistd model random: unknown shape '%s'; valid shapes: %s\n", o.shape.c_str(),
                     join(engine::random_model_shape_names(), ", ").c_str());
        return 2;
    }
    auto dtype = engine::dtype_from_name(o.dtype);
    if (!dtype) {
        std::fprintf(stderr, "assistd model random: unknown dtype '%s'; valid: f32, f16, bf16, q8_0\n",
                     o.dtype.c_str());
        return 2;
    }
    if (!o.arch.empty()) {
        if (o.arch != "llama" && o.arch != "qwen2") {
            std::fprintf(stderr, "assistd model random: unknown architecture '%s'; valid: llama, qwen2\n",
                         o.arch.c_str());
            return 2;
        }
        if (o.arch != spec->arch) spec->name = fmt::format("{} as {} (random)", o.shape, o.arch);
        spec->arch = o.arch;
    }
    spec->dtype = *dtype;
    spec->seed = o.seed;
    if (o.tied) spec->tied_output = true;
    const auto start = std::chrono::steady_clock::now();
    if (auto s = engine::write_random_model(*spec, o.out); !s) {
        std::fprintf(stderr, "assistd model random: %s\n", s.error().message.c_str());
        return 2;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto file = GgufFile::open(o.out);
    const double mib = file ? static_cast<double>(file.value()->file_size()) / (1 << 20) : 0.0;
    std::printf("wrote %s: %s %s, %zu layers, embd %zu, vocab %zu, %s head, seed %llu (%.1f MiB in %.2f s)\n",
                o.out.c_str(), spec->arch.c_str(), std::string(engine::dtype_name(*dtype)).c_str(), spec->n_layer,
                spec->n_embd, spec->n_vocab, spec->tied_output ? "tied" : "separate",
                static_cast<unsigned long long>(o.seed), mib, secs);
    return 0;
}

// Everything `model info` reports, gathered from the GGUF file alone (no model load).
nlohmann::ordered_json describe(const GgufFile& f) {
    nlohmann::ordered_json j;
    const std::string arch(f.get_string("general.architecture").value_or(""));
    auto u = [&](std::string_view key) -> nlohmann::ordered_json {
        if (auto v = f.get_uint(fmt::format("{}.{}", arch, key))) return *v;
        return nullptr;
    };
    auto fl = [&](std::string_view key) -> nlohmann::ordered_json {
        // Printed at float precision: the file stores f32 (1e-05, not 9.99999974e-06).
        if (auto v = f.get_float(fmt::format("{}.{}", arch, key)))
            return std::stod(fmt::format("{}", static_cast<float>(*v)));
        return nullptr;
    };
    j["file"] = f.path();
    j["gguf_version"] = f.version();
    j["file_bytes"] = f.file_size();
    j["architecture"] = arch.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(arch);
    if (auto n = f.get_string("general.name")) j["name"] = std::string(*n);
    if (auto ft = f.get_uint("general.file_type")) {
        static const std::map<uint64_t, std::string> names = {{0, "f32"}, {1, "f16"}, {7, "q8_0"}, {32, "bf16"}};
        auto it = names.find(*ft);
        j["file_type"] = it != names.end() ? it->second : fmt::format("ggml file type {}", *ft);
    }
    nlohmann::ordered_json shape;
    shape["n_embd"] = u("embedding_length");
    shape["n_layer"] = u("block_count");
    shape["n_head"] = u("attention.head_count");
    shape["n_head_kv"] = u("attention.head_count_kv");
    shape["n_ff"] = u("feed_forward_length");
    shape["n_ctx_train"] = u("context_length");
    shape["n_rot"] = u("rope.dimension_count");
    shape["rope_theta"] = fl("rope.freq_base");
    shape["rms_eps"] = fl("attention.layer_norm_rms_epsilon");
    const engine::GgufArray* tokens = f.get_array("tokenizer.ggml.tokens");
    if (auto v = f.get_uint(arch + ".vocab_size")) shape["n_vocab"] = *v;
    else if (tokens) shape["n_vocab"] = tokens->count;
    else shape["n_vocab"] = nullptr;
    j["shape"] = shape;

    uint64_t n_params = 0, weight_bytes = 0;
    std::map<std::string, size_t> types;
    for (const auto& t : f.tensors()) {
        n_params += t.n_elements;
        weight_bytes += t.n_bytes;
        types[std::string(t.supported ? engine::dtype_name(t.dtype) : engine::ggml_type_name(t.ggml_type))]++;
    }
    j["tensor_count"] = f.tensors().size();
    j["tensor_types"] = types;
    j["parameters"] = n_params;
    j["weight_bytes"] = weight_bytes;
    j["tied_output"] = f.tensor("output.weight") == nullptr && f.tensor("token_embd.weight") != nullptr;

    nlohmann::ordered_json tok;
    const std::string model(f.get_string("tokenizer.ggml.model").value_or(""));
    tok["model"] = model.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(model);
    tok["kind"] = model == "llama" ? "sentencepiece" : model == "gpt2" ? "byte-bpe" : model.empty() ? "none" : "unknown";
    tok["vocab"] = tokens ? tokens->count : 0;
    if (auto pre = f.get_string("tokenizer.ggml.pre")) tok["pre"] = std::string(*pre);
    if (auto b = f.get_uint("tokenizer.ggml.bos_token_id")) tok["bos"] = *b;
    if (auto e = f.get_uint("tokenizer.ggml.eos_token_id")) tok["eos"] = *e;
    j["tokenizer"] = tok;
    // The family the engine would render with; an absent template falls back to ChatML.
    auto token_text = [&](const char* key) -> std::string {
        auto id = f.get_uint(key);
        if (!id || !tokens || *id >= tokens->strings.size()) return "";
        return std::string(tokens->strings[*id]);
    };
    const auto tmpl = f.get_string("tokenizer.chat_template");
    const auto chat = engine::ChatTemplate::detect(tmpl.value_or(""), token_text("tokenizer.ggml.bos_token_id"),
                                                   token_text("tokenizer.ggml.eos_token_id"));
    nlohmann::ordered_json ct;
    ct["family"] = engine::chat_template_name(chat.kind);
    ct["in_file"] = tmpl.has_value();
    j["chat_template"] = ct;
    return j;
}

std::string text_or_dash(const nlohmann::ordered_json& v) {
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
}

int run_info(const std::string& path, bool json) {
    auto file = GgufFile::open(path);
    if (!file) {
        std::fprintf(stderr, "assistd model info: %s\n", file.error().message.c_str());
        return 2;
    }
    const auto j = describe(*file.value());
    if (json) {
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    const auto& s = j["shape"];
    std::string types;
    for (const auto& [k, v] : j["tensor_types"].items()) types += fmt::format("{}{} {}", types.empty() ? "" : ", ", v.dump(), k);
    std::printf("file:          %s (GGUF v%s, %.1f MiB)\n", path.c_str(), j["gguf_version"].dump().c_str(),
                j["file_bytes"].get<double>() / (1 << 20));
    std::printf("architecture:  %s\n", text_or_dash(j["architecture"]).c_str());
    std::printf("name:          %s\n", text_or_dash(j.value("name", nlohmann::ordered_json())).c_str());
    std::printf("file type:     %s\n", text_or_dash(j.value("file_type", nlohmann::ordered_json())).c_str());
    std::printf("shape:         vocab %s, embd %s, layers %s, heads %s, KV heads %s, FFN %s, rope dims %s\n",
                text_or_dash(s["n_vocab"]).c_str(), text_or_dash(s["n_embd"]).c_str(),
                text_or_dash(s["n_layer"]).c_str(), text_or_dash(s["n_head"]).c_str(),
                text_or_dash(s["n_head_kv"]).c_str(), text_or_dash(s["n_ff"]).c_str(),
                text_or_dash(s["n_rot"]).c_str());
    std::printf("               context %s, rope theta %s, rms eps %s\n", text_or_dash(s["n_ctx_train"]).c_str(),
                text_or_dash(s["rope_theta"]).c_str(), text_or_dash(s["rms_eps"]).c_str());
    std::printf("tensors:       %s (%s), output head %s\n", j["tensor_count"].dump().c_str(), types.c_str(),
                j["tied_output"].get<bool>() ? "tied to token_embd" : "separate");
    std::printf("parameters:    %.2f M (%.1f MiB of weights)\n", j["parameters"].get<double>() / 1e6,
                j["weight_bytes"].get<double>() / (1 << 20));
    const auto& t = j["tokenizer"];
    std::printf("tokenizer:     %s (%s), %s tokens\n", t["kind"].get<std::string>().c_str(),
                text_or_dash(t["model"]).c_str(), t["vocab"].dump().c_str());
    std::printf("chat template: %s%s\n", j["chat_template"]["family"].get<std::string>().c_str(),
                j["chat_template"]["in_file"].get<bool>() ? "" : " (no tokenizer.chat_template in the file)");
    return 0;
}

}  // namespace

void register_model(CLI::App& app, int& exit_code) {
    CLI::App* model = app.add_subcommand("model", "Model file tools: random-weight models, file info");
    model->require_subcommand(1);

    auto ro = std::make_shared<RandomOptions>();
    CLI::App* random = model->add_subcommand("random", "Write a random-weight GGUF model of a real shape");
    random->add_option("--shape", ro->shape, "Shape: " + join(engine::random_model_shape_names(), ", "))->required();
    random->add_option("--dtype", ro->dtype, "Weight type: f32, f16, bf16, q8_0")->capture_default_str();
    random->add_option("--out", ro->out, "Output GGUF file")->required();
    random->add_option("--seed", ro->seed, "PRNG seed (same seed, same file)")->capture_default_str();
    random->add_flag("--tied", ro->tied, "Tie the output head to token_embd (no output.weight)");
    random->add_option("--arch", ro->arch, "Override the shape's architecture: llama or qwen2");
    random->callback([ro, &exit_code] { exit_code = run_random(*ro); });

    auto path = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    CLI::App* info = model->add_subcommand("info", "Describe a GGUF model file");
    info->add_option("file", *path, "GGUF file")->required();
    info->add_flag("--json", *json, "Print JSON");
    info->callback([path, json, &exit_code] { exit_code = run_info(*path, *json); });
}

}  // namespace assistd::cli
