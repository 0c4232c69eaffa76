// `assistd generate`: one prompt through the engine, streamed to stdout or
// returned as one JSON object with token ids and timings.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "engine/engine.h"

namespace assistd::cli {
namespace {

struct GenerateOptions {
    ModelOptions model;
    std::string prompt;
    int max_tokens = 64;
    float temperature = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float repeat_penalty = 1.0f;
    long long seed = -1;
    std::vector<std::string> stops;
    bool chat = false;
    bool ignore_eos = false;
    bool json = false;
};

using Clock = std::chrono::steady_clock;

int run_generate(const GenerateOptions& o) {
    using namespace assistd::engine;
    auto precision = parse_precision(o.model.precision);
    if (!precision) return 2;
    if (o.max_tokens < 0) {
        std::fprintf(stderr, "assistd generate: --max-tokens must be >= 0\n");
        return 2;
    }
    auto model_ptr = load_model(o.model, "generate");
    if (!model_ptr) return 2;
    Model& model = *model_ptr;
    const Tokenizer& tok = model.tokenizer();

    std::vector<std::string> stops = o.stops;
    std::vector<TokenId> prompt;
    if (o.chat) {
        // The prompt is the user's message: plain text inside the template's markup.
        prompt = encode_chat(tok, model.chat_template().render({{"user", o.prompt}}, true), tok.add_bos_default());
        for (auto& s : model.chat_template().stop_strings()) stops.push_back(s);
    } else {
        prompt = tok.encode(o.prompt, tok.add_bos_default(), false);
    }
    const size_t n_ctx = model.info().n_ctx;
    if (prompt.empty()) {
        std::fprintf(stderr, "assistd generate: the prompt is empty and the model adds no BOS token; give --prompt\n");
        return 2;
    }
    if (prompt.size() + static_cast<size_t>(o.max_tokens) > n_ctx) {
        std::fprintf(stderr,
                     "assistd generate: the prompt (%zu tokens) plus --max-tokens %d exceeds the context of %zu "
                     "tokens; shorten the prompt, lower --max-tokens or raise --ctx-size\n",
                     prompt.size(), o.max_tokens, n_ctx);
        return 2;
    }

    const uint64_t seed = o.seed >= 0 ? static_cast<uint64_t>(o.seed) : std::random_device{}();
    SamplerParams sp;
    sp.temperature = o.temperature;
    sp.top_k = o.top_k;
    sp.top_p = o.top_p;
    sp.min_p = o.min_p;
    sp.repetition_penalty = o.repeat_penalty;
    sp.seed = seed;
    Sampler sampler(sp, model.info().n_vocab);

    auto seq = model.create_sequence();
    if (!seq) {
        std::fprintf(stderr, "assistd generate: %s\n", seq.error().message.c_str());
        return 2;
    }

    // Prefill in chunks of the engine's batch size.
    const auto t_prefill = Clock::now();
    std::span<const float> logits;
    const size_t chunk = o.model.batch_tokens;
    for (size_t i = 0; i < prompt.size(); i += chunk) {
        const size_t n = std::min(chunk, prompt.size() - i);
        BatchEntry e{*seq, std::span<const TokenId>(prompt.data() + i, n), false};
        auto r = model.decode(std::span<const BatchEntry>(&e, 1), *precision);
        if (!r) {
            std::fprintf(stderr, "assistd generate: %s\n", r.error().message.c_str());
            return 2;
        }
        logits = *r;
    }
    const double prefill_s = std::chrono::duration<double>(Clock::now() - t_prefill).count();

    std::vector<TokenId> history(prompt);
    std::vector<TokenId> generated;
    generated.reserve(o.max_tokens);
    StreamingDetokenizer detok(tok);
    std::string out_text;
    size_t emitted = 0;  // bytes of out_text already printed
    std::string stop_reason = "length";
    const auto t_decode = Clock::now();
    for (int i = 0; i < o.max_tokens; ++i) {
        const TokenId t = sampler.sample(logits, history);
        if (!o.ignore_eos && tok.is_end_of_generation(t)) {
            stop_reason = "eos";
            break;
        }
        generated.push_back(t);
        history.push_back(t);
        out_text += detok.feed(t);
        const StopMatch m = find_stop(out_text, stops);
        if (m.position != std::string::npos) {
            out_text.resize(m.position);
            stop_reason = "stop";
            break;
        }
        if (!o.json) {
            const size_t safe = out_text.size() - m.hold_back;
            if (safe > emitted) {
                std::fwrite(out_text.data() + emitted, 1, safe - emitted, stdout);
                std::fflush(stdout);
                emitted = safe;
            }
        }
        if (i + 1 == o.max_tokens) break;
        BatchEntry e{*seq, std::span<const TokenId>(&generated.back(), 1), false};
        auto r = model.decode(std::span<const BatchEntry>(&e, 1), *precision);
        if (!r) {
            std::fprintf(stderr, "assistd generate: %s\n", r.error().message.c_str());
            return 2;
        }
        logits = *r;
    }
    if (stop_reason != "stop") out_text += detok.flush();
    const double decode_s = std::chrono::duration<double>(Clock::now() - t_decode).count();
    // Decode speed counts the forward passes after the first sampled token.
    const size_t decode_passes = generated.empty() ? 0 : generated.size() - (stop_reason == "length" ? 1 : 0);

    if (o.json) {
        nlohmann::json j;
        j["prompt_tokens"] = prompt;
        j["tokens"] = generated;
        j["text"] = out_text;
        j["stop_reason"] = stop_reason;
        j["precision"] = precision_name(*precision);
        j["seed"] = seed;
        j["threads"] = model.n_threads();
        j["timings"] = {
            {"prefill_ms", prefill_s * 1e3},
            {"prefill_tokens_per_s", prefill_s > 0 ? prompt.size() / prefill_s : 0.0},
            {"decode_ms", decode_s * 1e3},
            {"decode_tokens_per_s", decode_s > 0 && decode_passes > 0 ? decode_passes / decode_s : 0.0},
        };
        std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
        if (out_text.size() > emitted) std::fwrite(out_text.data() + emitted, 1, out_text.size() - emitted, stdout);
        std::printf("\n");
        std::fprintf(stderr, "[%zu prompt tokens at %.1f tok/s, %zu generated at %.1f tok/s, %s, stop: %s]\n",
                     prompt.size(), prefill_s > 0 ? prompt.size() / prefill_s : 0.0, generated.size(),
                     decode_s > 0 && decode_passes > 0 ? decode_passes / decode_s : 0.0, precision_name(*precision),
                     stop_reason.c_str());
    }
    model.free_sequence(*seq);
    return 0;
}

}  // namespace

void register_generate(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<GenerateOptions>();
    CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt with a GGUF model");
    add_model_options(*cmd, o->model);
    cmd->add_option("-p,--prompt", o->prompt, "Prompt text")->required();
    cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens to generate")->capture_default_str();
    cmd->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
    cmd->add_option("--top-k", o->top_k, "Top-k (0: off)")->capture_default_str();
    cmd->add_option("--top-p", o->top_p, "Top-p nucleus (1: off)")->capture_default_str();
    cmd->add_option("--min-p", o->min_p, "Min-p (0: off)")->capture_default_str();
    cmd->add_option("--repeat-penalty", o->repeat_penalty, "Repetition penalty (1: off)")->capture_default_str();
    cmd->add_option("--seed", o->seed, "Random seed (default: random, printed with --json)");
    cmd->add_option("--stop", o->stops, "Stop string (repeatable)");
    cmd->add_flag("--chat", o->chat, "Wrap the prompt as a user message in the model's chat template");
    cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-generation tokens");
    cmd->add_flag("--json", o->json, "Print one JSON object with token ids, text and timings");
    cmd->callback([o, &exit_code] { exit_code = run_generate(*o); });
}

}  // namespace assistd::cli
