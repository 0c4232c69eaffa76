// `assistd bench membw`: the machine's practical memory bandwidth now (a
// STREAM-like read-only sum, copy and triad over arrays far larger than the
// last-level cache, with the thread count decode uses), so decode's weight
// GB/s from `bench engine` can be set against it. Prints figures; exit 1 only
// when a stream computed a wrong result.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "engine/memory_bandwidth.h"

namespace assistd::cli {
namespace {

struct MembwOptions {
    int threads = 0;
    int64_t size_mib = 1024;
    int reps = 5;
    bool huge_pages = true;
    bool json = false;
};

nlohmann::json stream_json(const engine::StreamFigure& f) {
    return {{"best_gb_per_s", f.best_gb_per_s},
            {"median_gb_per_s", f.median_gb_per_s},
            {"bytes_per_pass", f.bytes_per_pass}};
}

int run_membw(const MembwOptions& o) {
    if (o.threads < 0) {
        std::fprintf(stderr, "assistd bench membw: --threads must be >= 1 (or 0: one per core)\n");
        return 2;
    }
    if (o.size_mib < 1) {
        std::fprintf(stderr,
                     "assistd bench membw: --size-mib must be >= 1 (use far more than the "
                     "last-level cache)\n");
        return 2;
    }
    if (o.reps < 1) {
        std::fprintf(stderr, "assistd bench membw: --reps must be >= 1\n");
        return 2;
    }
    engine::MemoryBandwidthOptions mo;
    mo.n_threads = o.threads > 0
                       ? o.threads
                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    mo.array_bytes = static_cast<size_t>(o.size_mib) << 20;
    mo.reps = o.reps;
    mo.huge_pages = o.huge_pages;
    mo.copy_and_triad = true;
    auto r = engine::measure_memory_bandwidth(mo);
    if (!r) {
        std::fprintf(stderr, "assistd bench membw: %s\n", r.error().message.c_str());
        return r.error().code == ErrorCode::kInternal ? 1 : 2;
    }
    if (o.json) {
        nlohmann::json out = {{"threads", r->n_threads},
                              {"array_mib", r->array_bytes >> 20},
                              {"reps", r->reps},
                              {"huge_pages", r->huge_pages},
                              {"huge_page_mib", r->huge_page_bytes >> 20},
                              {"kernels", r->kernels},
                              {"read", stream_json(r->read)},
                              {"copy", stream_json(r->copy)},
                              {"triad", stream_json(r->triad)},
                              {"read_checksum", r->read_checksum},
                              {"expected_checksum", r->expected_checksum},
                              {"checksum_verified", r->read_checksum == r->expected_checksum},
                              {"seconds", r->seconds}};
        std::printf("%s\n", out.dump().c_str());
        return 0;
    }
    std::printf(
        "memory bandwidth: %d thread%s, kernels %s, 3 arrays of %zu MiB (%zu of their %zu MiB in "
        "huge "
        "pages), best of %d\n",
        r->n_threads, r->n_threads == 1 ? "" : "s", r->kernels.c_str(), r->array_bytes >> 20,
        r->huge_page_bytes >> 20, 3 * (r->array_bytes >> 20), r->reps);
    std::printf("%-28s %10s %12s\n", "stream", "best GB/s", "median GB/s");
    auto row = [](const char* name, const engine::StreamFigure& f) {
        std::printf("%-28s %10.1f %12.1f\n", name, f.best_gb_per_s, f.median_gb_per_s);
    };
    row("read (sum, 8 B/word)", r->read);
    row("copy c = a (8 B/element)", r->copy);
    row("triad a = b + s*c (12 B/el)", r->triad);
    std::printf("read checksum %#" PRIx64
                " equals the array's sum; copy and triad results checked (%.2f s)\n",
                r->read_checksum, r->seconds);
    return 0;
}

}  // namespace

void register_bench_membw(CLI::App& bench, int& exit_code) {
    auto o = std::make_shared<MembwOptions>();
    CLI::App* cmd = bench.add_subcommand("membw",
                                         "Memory bandwidth now: read-only sum, copy and triad over "
                                         "arrays far larger than the cache (GB/s)");
    cmd->add_option("-t,--threads", o->threads, "Threads (0: one per core, as decode uses)")
        ->capture_default_str();
    cmd->add_option("--size-mib", o->size_mib,
                    "MiB per array (read streams one, copy two, triad three)")
        ->capture_default_str();
    cmd->add_option("--reps", o->reps, "Passes per stream (the best and the median are printed)")
        ->capture_default_str();
    cmd->add_option("--huge-pages", o->huge_pages,
                    "Advise transparent huge pages, as the weights: true or false")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_membw(*o); });
}

}  // namespace assistd::cli
