#include "engine/memory_bandwidth.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/stats.h"
#include "engine/aligned_buffer.h"
#include "engine/kernels/kernels.h"
#include "engine/thread_pool.h"

namespace assistd::engine {
namespace {

using Clock = std::chrono::steady_clock;

constexpr float kTriadScale = 3.f;
// Threads split the arrays in whole pages, so no two threads share a line.
constexpr size_t kSplitFloats = 4096 / sizeof(float);

float triad_b_element(size_t i) {
    return static_cast<float>(i % 7);
}

// One per thread, each on its own cache line.
struct alignas(64) PerThread {
    uint64_t sum = 0;
    bool ok = true;
};

StreamFigure figure(const std::vector<double>& rates, double bytes) {
    StreamFigure f;
    f.bytes_per_pass = bytes;
    f.best_gb_per_s = *std::max_element(rates.begin(), rates.end());
    f.median_gb_per_s = median(rates);
    return f;
}

// AnonHugePages of the mappings that overlap the arrays, from
// /proc/self/smaps. The kernel merges adjacent anonymous mappings, so one may
// reach past the arrays: the sum is capped at their size.
size_t huge_page_bytes_of(const std::vector<AlignedBuffer>& arrays) {
    FILE* f = std::fopen("/proc/self/smaps", "r");
    if (!f) return 0;
    char line[512];
    bool overlaps = false;
    size_t total = 0, kib = 0, arrays_bytes = 0;
    for (const auto& a : arrays) arrays_bytes += a.size();
    while (std::fgets(line, sizeof line, f)) {
        uintptr_t begin = 0, end = 0;
        if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &begin, &end) ==
            2) {  // a mapping's first line
            overlaps = std::any_of(arrays.begin(), arrays.end(), [&](const AlignedBuffer& a) {
                const auto p = reinterpret_cast<uintptr_t>(a.data());
                return p < end && p + a.size() > begin;
            });
            continue;
        }
        if (overlaps && std::sscanf(line, "AnonHugePages: %zu kB", &kib) == 1) total += kib << 10;
    }
    std::fclose(f);
    return std::min(total, arrays_bytes);
}

}  // namespace

float memory_probe_element(size_t i) {
    return static_cast<float>(i % 4099);
}

struct MemoryProbe::Impl {
    explicit Impl(const MemoryBandwidthOptions& o) : options(o), pool(o.n_threads), per_thread(o.n_threads) {}

    MemoryBandwidthOptions options;
    ThreadPool pool;
    std::vector<PerThread> per_thread;
    std::vector<AlignedBuffer> arrays;
    float *a = nullptr, *b = nullptr, *c = nullptr;
    size_t n = 0;  // floats per array
    uint64_t expected_checksum = 0, read_checksum = 0;
    size_t huge_page_bytes = 0;

    // Each thread runs body(its slot, begin, end) over its own part of the arrays.
    template <typename Body>
    void run(Body&& body) {
        pool.run([&](int ith, int nth) {
            size_t begin, end;
            ThreadPool::split(n, kSplitFloats, ith, nth, begin, end);
            body(per_thread[ith], begin, end);
        });
    }
    template <typename Body>
    double timed(Body&& body) {
        const auto t0 = Clock::now();
        run(body);
        return std::chrono::duration<double>(Clock::now() - t0).count();
    }
    uint64_t total_sum() const {
        uint64_t s = 0;
        for (const PerThread& t : per_thread) s += t.sum;
        return s;
    }
};

MemoryProbe::MemoryProbe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MemoryProbe::~MemoryProbe() = default;

Result<std::unique_ptr<MemoryProbe>> MemoryProbe::create(const MemoryBandwidthOptions& o) {
    if (o.n_threads < 1)
        return make_error(ErrorCode::kInvalidArgument, "the thread count must be >= 1");
    if (o.reps < 1) return make_error(ErrorCode::kInvalidArgument, "the repetitions must be >= 1");
    if (o.array_bytes < 4096 || o.array_bytes % 4096 != 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "the array size must be a positive multiple of 4 KiB");
    const size_t n_arrays = o.copy_and_triad ? 3 : 1;
    const double physical = static_cast<double>(sysconf(_SC_PHYS_PAGES)) *
                            static_cast<double>(sysconf(_SC_PAGESIZE));
    if (physical > 0 && static_cast<double>(o.array_bytes) * n_arrays > 0.75 * physical)
        return make_error(
            ErrorCode::kResourceExhausted,
            fmt::format(
                "{} arrays of {} MiB need more than three quarters of this machine's {} MiB "
                "of memory; use smaller arrays",
                n_arrays, o.array_bytes >> 20, static_cast<uint64_t>(physical) >> 20));

    auto impl = std::make_unique<Impl>(o);
    try {
        for (size_t i = 0; i < n_arrays; ++i) impl->arrays.emplace_back(o.array_bytes, o.huge_pages);
    } catch (const std::bad_alloc&) {
        return make_error(
            ErrorCode::kResourceExhausted,
            fmt::format("out of memory for {} arrays of {} MiB", n_arrays, o.array_bytes >> 20));
    }
    Impl& p = *impl;
    p.a = p.arrays[0].as<float>();
    p.b = o.copy_and_triad ? p.arrays[1].as<float>() : nullptr;
    p.c = o.copy_and_triad ? p.arrays[2].as<float>() : nullptr;
    p.n = o.array_bytes / sizeof(float);
    // Fill (each thread faults in the pages it will stream) and take the
    // expected checksum with plain code, independent of the kernels.
    p.run([&](PerThread& t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) p.a[i] = memory_probe_element(i);
        if (p.b) {
            for (size_t i = begin; i < end; ++i) p.b[i] = triad_b_element(i);
            std::memset(p.c + begin, 0, (end - begin) * sizeof(float));
        }
        uint64_t s = 0;
        for (size_t i = begin; i < end; i += 2) {
            uint64_t word;
            std::memcpy(&word, p.a + i, sizeof word);
            s += word;
        }
        t.sum = s;
    });
    p.expected_checksum = p.total_sum();
    p.huge_page_bytes = huge_page_bytes_of(p.arrays);
    return std::unique_ptr<MemoryProbe>(new MemoryProbe(std::move(impl)));
}

const MemoryBandwidthOptions& MemoryProbe::options() const { return impl_->options; }
uint64_t MemoryProbe::expected_checksum() const { return impl_->expected_checksum; }
uint64_t MemoryProbe::read_checksum() const { return impl_->read_checksum; }
size_t MemoryProbe::huge_page_bytes() const { return impl_->huge_page_bytes; }

Result<double> MemoryProbe::read_pass() {
    Impl& p = *impl_;
    const double seconds = p.timed([&](PerThread& t, size_t begin, size_t end) {
        t.sum = kernels::stream_read_sum(reinterpret_cast<const uint64_t*>(p.a + begin),
                                         (end - begin) / 2);
    });
    p.read_checksum = p.total_sum();
    if (p.read_checksum != p.expected_checksum)
        return make_error(
            ErrorCode::kInternal,
            fmt::format("the read stream's checksum {:#x} differs from the array's sum {:#x}",
                        p.read_checksum, p.expected_checksum));
    return static_cast<double>(p.options.array_bytes) / seconds / 1e9;
}

Result<double> MemoryProbe::copy_pass() {
    Impl& p = *impl_;
    if (!p.c) return make_error(ErrorCode::kInvalidArgument, "the probe has no copy arrays");
    const double seconds = p.timed([&](PerThread&, size_t begin, size_t end) {
        kernels::stream_copy(p.a + begin, p.c + begin, end - begin);
    });
    return 2.0 * static_cast<double>(p.options.array_bytes) / seconds / 1e9;
}

Result<double> MemoryProbe::triad_pass() {
    Impl& p = *impl_;
    if (!p.c) return make_error(ErrorCode::kInvalidArgument, "the probe has no triad arrays");
    const double seconds = p.timed([&](PerThread&, size_t begin, size_t end) {
        kernels::stream_triad(p.a + begin, p.b + begin, p.c + begin, kTriadScale, end - begin);
    });
    return 3.0 * static_cast<double>(p.options.array_bytes) / seconds / 1e9;
}

Status MemoryProbe::check_copy_and_triad() {
    Impl& p = *impl_;
    if (!p.c) return make_error(ErrorCode::kInvalidArgument, "the probe has no copy arrays");
    // Every element of both results, checked with plain code.
    for (PerThread& t : p.per_thread) t.ok = true;
    p.run([&](PerThread& t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) {
            const float original = memory_probe_element(i);
            if (p.c[i] != original || p.a[i] != triad_b_element(i) + kTriadScale * original) {
                t.ok = false;
                break;
            }
        }
    });
    if (!std::all_of(p.per_thread.begin(), p.per_thread.end(),
                     [](const PerThread& t) { return t.ok; }))
        return make_error(ErrorCode::kInternal, "the copy or triad stream wrote a wrong element");
    return {};
}

Result<MemoryBandwidth> measure_memory_bandwidth(const MemoryBandwidthOptions& o) {
    const auto t_start = Clock::now();
    auto probe = MemoryProbe::create(o);
    if (!probe) return probe.error();
    MemoryProbe& m = **probe;

    MemoryBandwidth result;
    result.n_threads = o.n_threads;
    result.array_bytes = o.array_bytes;
    result.reps = o.reps;
    result.huge_pages = o.huge_pages;
    result.huge_page_bytes = m.huge_page_bytes();
    result.kernels = kernels::active_tier();
    result.expected_checksum = m.expected_checksum();

    auto passes = [&](auto pass, double bytes, StreamFigure& out) -> Status {
        std::vector<double> rates;
        for (int r = 0; r < o.reps; ++r) {
            auto rate = (m.*pass)();
            if (!rate) return rate.error();
            rates.push_back(*rate);
        }
        out = figure(rates, bytes);
        return {};
    };
    const double bytes = static_cast<double>(o.array_bytes);
    if (auto s = passes(&MemoryProbe::read_pass, bytes, result.read); !s) return s.error();
    result.read_checksum = m.read_checksum();
    if (o.copy_and_triad) {
        if (auto s = passes(&MemoryProbe::copy_pass, 2 * bytes, result.copy); !s) return s.error();
        if (auto s = passes(&MemoryProbe::triad_pass, 3 * bytes, result.triad); !s)
            return s.error();
        if (auto s = m.check_copy_and_triad(); !s) return s.error();
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    return result;
}

}  // namespace assistd::engine
