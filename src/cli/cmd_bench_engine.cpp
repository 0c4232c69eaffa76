// `assistd bench engine`: prefill and decode speed of one model, the way
// llama-bench measures them (pp: one forward over N prompt tokens; tg: N
// single-token steps from an empty context), plus batched decode and the
// weight bandwidth decode achieves, and with --membw that bandwidth as a share
// of the read bandwidth the memory probe measures right after each decode
// run. Prints figures; never fails on time.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/model_options.h"
#include "common/cpu_features.h"
#include "common/stats.h"
#include "engine/engine.h"
#include "engine/kernels/kernels.h"
#include "engine/memory_bandwidth.h"

namespace assistd::cli {
namespace {

using namespace assistd::engine;
using Clock = std::chrono::steady_clock;

struct BenchOptions {
    ModelOptions model;
    std::string precisions = "native";
    int prompt_tokens = 128;
    int gen_tokens = 64;
    int decode_context = 0;  // cached tokens each decode run starts from
    int batch = 1;
    int reps = 3;
    bool membw = false;        // run the read-bandwidth probe after the figures
    int64_t membw_size_mib = 1024;  // the probe's array
    bool json = false;
};

// Bytes of weights one decode step reads at this precision (every matrix once).
double weight_bytes_per_token(const Model& m, Precision p) {
    const auto& info = m.info();
    const DType t = precision_storage_type(p, info.file_type);
    auto bytes = [&](size_t rows, size_t cols) { return static_cast<double>(dtype_row_bytes(t, cols)) * rows; };
    const size_t E = info.n_embd, Q = info.n_head * info.head_dim, KV = info.n_head_kv * info.head_dim;
    double per_layer = bytes(Q, E) + 2 * bytes(KV, E) + bytes(E, Q) + 2 * bytes(info.n_ff, E) + bytes(E, info.n_ff);
    return per_layer * info.n_layer + bytes(info.n_vocab, E);
}

struct Figures {
    double prefill_tps = 0, decode_tps = 0, batched_tps = 0, gbps = 0;
    // With the memory probe: the median of its read GB/s right after each
    // decode run (the best of a few passes), decode's weight GB/s over that,
    // and the same ratio run by run (decode run i over the probe after it).
    double membw_read_gbps = 0, membw_share = 0;
    std::vector<double> membw_run_shares;
};

// Read passes of the probe right after a decode run: the best of this many.
constexpr int kProbePassesPerRun = 3;

Result<Figures> measure(Model& m, Precision p, const BenchOptions& o, MemoryProbe* probe) {
    Figures f;
    const size_t V = m.info().n_vocab;
    std::vector<TokenId> tokens(std::max(o.prompt_tokens, 1));
    uint64_t s = 42;
    for (auto& t : tokens) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t = static_cast<TokenId>((s >> 33) % V);
    }
    if (auto st = m.prepare_precision(p); !st) return st.error();

    auto run_prefill = [&]() -> Result<double> {
        auto seq = m.create_sequence();
        if (!seq) return seq.error();
        const auto t0 = Clock::now();
        for (size_t i = 0; i < tokens.size(); i += o.model.batch_tokens) {
            const size_t n = std::min(o.model.batch_tokens, tokens.size() - i);
            BatchEntry e{*seq, std::span<const TokenId>(tokens.data() + i, n), false};
            auto r = m.decode(std::span<const BatchEntry>(&e, 1), p);
            if (!r) { m.free_sequence(*seq); return r.error(); }
        }
        const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
        m.free_sequence(*seq);
        return dt;
    };
    // Decode: B sequences step together, one token each per step, each
    // after --decode-context cached tokens (prefilled untimed).
    std::vector<TokenId> history(static_cast<size_t>(o.decode_context));
    for (size_t i = 0; i < history.size(); ++i) history[i] = tokens[i % tokens.size()];
    auto run_decode = [&](int B) -> Result<double> {
        std::vector<SequenceId> seqs;
        auto cleanup = [&] { for (auto q : seqs) m.free_sequence(q); };
        for (int b = 0; b < B; ++b) {
            auto seq = m.create_sequence();
            if (!seq) { cleanup(); return seq.error(); }
            seqs.push_back(*seq);
            for (size_t i = 0; i < history.size(); i += o.model.batch_tokens) {
                const size_t n = std::min(o.model.batch_tokens, history.size() - i);
                BatchEntry e{*seq, std::span<const TokenId>(history.data() + i, n), false};
                if (auto r = m.decode(std::span<const BatchEntry>(&e, 1), p); !r) { cleanup(); return r.error(); }
            }
        }
        std::vector<BatchEntry> batch(B);
        std::vector<TokenId> next(B);
        const auto t0 = Clock::now();
        for (int step = 0; step < o.gen_tokens; ++step) {
            for (int b = 0; b < B; ++b) {
                next[b] = tokens[(step + b) % tokens.size()];
                batch[b] = BatchEntry{seqs[b], std::span<const TokenId>(&next[b], 1), false};
            }
            auto r = m.decode(batch, p);
            if (!r) { cleanup(); return r.error(); }
        }
        const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
        cleanup();
        return dt;
    };

    // Warm-up: page in the weights and settle the threads.
    if (auto w = run_decode(1); !w) return w.error();
    std::vector<double> pp, tg, tgb, probe_gbps, shares;
    const double bytes_per_token = weight_bytes_per_token(m, p);
    for (int r = 0; r < o.reps; ++r) {
        auto a = run_prefill();
        if (!a) return a.error();
        pp.push_back(tokens.size() / *a);
        auto b = run_decode(1);
        if (!b) return b.error();
        tg.push_back(o.gen_tokens / *b);
        if (probe) {
            double best = 0;
            for (int pass = 0; pass < kProbePassesPerRun; ++pass) {
                auto rate = probe->read_pass();
                if (!rate) return rate.error();
                best = std::max(best, *rate);
            }
            probe_gbps.push_back(best);
            shares.push_back(bytes_per_token * tg.back() / 1e9 / best);
        }
        if (o.batch > 1) {
            auto c = run_decode(o.batch);
            if (!c) return c.error();
            tgb.push_back(static_cast<double>(o.gen_tokens) * o.batch / *c);
        }
    }
    f.prefill_tps = median(pp);
    f.decode_tps = median(tg);
    f.batched_tps = median(tgb);
    f.gbps = bytes_per_token * f.decode_tps / 1e9;
    f.membw_read_gbps = median(probe_gbps);
    f.membw_share = f.membw_read_gbps > 0 ? f.gbps / f.membw_read_gbps : 0;
    f.membw_run_shares = shares;
    return f;
}

int run_bench(const BenchOptions& o) {
    std::vector<Precision> precisions;
    std::stringstream ss(o.precisions);
    for (std::string item; std::getline(ss, item, ',');) {
        auto p = parse_precision(item);
        if (!p) return 2;
        precisions.push_back(*p);
    }
    if (o.prompt_tokens < 1 || o.gen_tokens < 1 || o.batch < 1 || o.reps < 1) {
        std::fprintf(stderr, "assistd bench engine: --prompt-tokens, --gen-tokens, --batch and --reps must be >= 1\n");
        return 2;
    }
    if (o.membw_size_mib < 1) {
        std::fprintf(stderr, "assistd bench engine: --membw-size-mib must be >= 1\n");
        return 2;
    }
    if (o.decode_context < 0) {
        std::fprintf(stderr, "assistd bench engine: --decode-context must be >= 0\n");
        return 2;
    }
    ModelOptions mo = o.model;
    if (mo.ctx_size == 0)
        mo.ctx_size = static_cast<size_t>(std::max(o.prompt_tokens, o.decode_context + 1) + o.gen_tokens + 16);
    if (static_cast<size_t>(o.decode_context + o.gen_tokens) > mo.ctx_size) {
        std::fprintf(stderr,
                     "assistd bench engine: --decode-context %d plus --gen-tokens %d exceeds the context of %zu "
                     "tokens; raise --ctx-size\n",
                     o.decode_context, o.gen_tokens, mo.ctx_size);
        return 2;
    }
    // Room for every sequence of the batched run (the engine's default holds four contexts).
    if (mo.kv_cache_tokens == 0) mo.kv_cache_tokens = mo.ctx_size * static_cast<size_t>(std::max(4, o.batch + 1));
    auto model = load_model(mo, "bench engine", static_cast<size_t>(o.batch) + 1);
    if (!model) return 2;
    const auto& info = model->info();

    nlohmann::json out;
    out["model"] = o.model.path;
    out["arch"] = info.arch_name;
    out["file_type"] = std::string(dtype_name(info.file_type));
    out["n_params"] = info.n_params;
    out["threads"] = model->n_threads();
    out["kernels"] = kernels::active_tier();
    out["cpu"] = cpu_features().describe();
    out["prompt_tokens"] = o.prompt_tokens;
    out["gen_tokens"] = o.gen_tokens;
    out["decode_context"] = o.decode_context;
    out["batch"] = o.batch;
    out["results"] = nlohmann::json::array();
    if (!o.json) {
        std::printf("model %s (%s, %s, %.1f M params), %d threads, kernels %s\n", o.model.path.c_str(),
                    info.arch_name.c_str(), std::string(dtype_name(info.file_type)).c_str(), info.n_params / 1e6,
                    model->n_threads(), kernels::active_tier());
        std::printf("%-9s %14s %14s %16s %12s\n", "precision", "prefill tok/s", "decode tok/s",
                    o.batch > 1 ? "batched tok/s" : "", "weight GB/s");
    }
    // The read-only memory probe with decode's thread count: the machine's
    // bandwidth moves too much to compare with a figure from another time.
    std::unique_ptr<MemoryProbe> probe;
    if (o.membw) {
        MemoryBandwidthOptions po;
        po.n_threads = model->n_threads();
        po.array_bytes = static_cast<size_t>(o.membw_size_mib) << 20;
        po.huge_pages = o.model.weights_huge_pages;
        po.copy_and_triad = false;
        auto created = MemoryProbe::create(po);
        if (!created) {
            std::fprintf(stderr, "assistd bench engine: memory probe: %s\n", created.error().message.c_str());
            return 2;
        }
        probe = std::move(*created);
        out["membw"] = {{"threads", po.n_threads},
                        {"array_mib", o.membw_size_mib},
                        {"passes_per_decode_run", kProbePassesPerRun},
                        {"huge_page_mib", probe->huge_page_bytes() >> 20}};
    }
    std::vector<std::pair<Precision, Figures>> probed;
    for (Precision p : precisions) {
        auto f = measure(*model, p, o, probe.get());
        if (!f) {
            std::fprintf(stderr, "assistd bench engine: %s: %s\n", precision_name(p), f.error().message.c_str());
            return f.error().code == ErrorCode::kInternal ? 1 : 2;
        }
        out["results"].push_back({{"precision", precision_name(p)},
                                  {"prefill_tokens_per_s", f->prefill_tps},
                                  {"decode_tokens_per_s", f->decode_tps},
                                  {"batched_decode_tokens_per_s", f->batched_tps},
                                  {"decode_weight_gb_per_s", f->gbps}});
        if (probe) {
            out["results"].back()["membw_read_gb_per_s"] = f->membw_read_gbps;
            out["results"].back()["decode_share_of_membw_read"] = f->membw_share;
            out["results"].back()["decode_share_run_by_run"] = f->membw_run_shares;
            probed.emplace_back(p, *f);
        }
        if (!o.json) {
            std::printf("%-9s %14.1f %14.1f %16s %12.1f\n", precision_name(p), f->prefill_tps, f->decode_tps,
                        o.batch > 1 ? std::to_string(static_cast<int>(f->batched_tps)).c_str() : "", f->gbps);
            std::fflush(stdout);
        }
    }
    if (!o.json) {
        for (const auto& [p, f] : probed) {
            std::string runs;
            for (double share : f.membw_run_shares) runs += " " + std::to_string(std::lround(100 * share)) + "%";
            std::printf("%s: decode reads %.1f GB/s = %.0f%% of the %.1f GB/s read bandwidth measured now "
                        "(medians of %d decode runs, each followed by the best of %d read passes over %lld MiB, "
                        "%d thread%s; run by run%s)\n",
                        precision_name(p), f.gbps, 100.0 * f.membw_share, f.membw_read_gbps, o.reps,
                        kProbePassesPerRun, static_cast<long long>(o.membw_size_mib), model->n_threads(),
                        model->n_threads() == 1 ? "" : "s", runs.c_str());
        }
    }
    if (o.json) std::printf("%s\n", out.dump().c_str());
    return 0;
}

}  // namespace

void register_bench_engine(CLI::App& bench, int& exit_code) {
    auto o = std::make_shared<BenchOptions>();
    CLI::App* cmd = bench.add_subcommand("engine", "Prefill and decode tokens/s, batched decode, weight GB/s");
    add_model_options(*cmd, o->model);
    cmd->remove_option(cmd->get_option("--precision"));
    cmd->add_option("--precision", o->precisions, "Comma-separated list of fp32, fp16, bf16, native")
        ->capture_default_str();
    cmd->add_option("--prompt-tokens", o->prompt_tokens, "Prompt length for prefill")->capture_default_str();
    cmd->add_option("--gen-tokens", o->gen_tokens, "Tokens per decode run")->capture_default_str();
    cmd->add_option("--decode-context", o->decode_context,
                    "Cached tokens each decode run starts from (prefilled, not timed)")
        ->capture_default_str();
    cmd->add_option("--batch", o->batch, "Sequences decoded together for the batched figure")->capture_default_str();
    cmd->add_option("--reps", o->reps, "Repetitions (the median is printed)")->capture_default_str();
    cmd->add_flag("--membw", o->membw,
                  "After each decode run, measure the read bandwidth (bench membw's read stream, 3 passes) and print "
                  "decode's share of it");
    cmd->add_option("--membw-size-mib", o->membw_size_mib, "MiB the --membw probe reads")->capture_default_str();
    cmd->add_flag("--json", o->json, "Print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_bench(*o); });
}

}  // namespace assistd::cli
