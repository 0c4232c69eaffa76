#include "engine/memory_bandwidth.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

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

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

StreamFigure figure(const std::vector<double>& seconds, double bytes) {
    StreamFigure f;
    f.bytes_per_pass = bytes;
    std::vector<double> rates;
    for (double s : seconds) rates.push_back(bytes / s / 1e9);
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

Result<MemoryBandwidth> measure_memory_bandwidth(const MemoryBandwidthOptions& o) {
    if (o.n_threads < 1)
        return make_error(ErrorCode::kInvalidArgument, "the thread count must be >= 1");
    if (o.reps < 1) return make_error(ErrorCode::kInvalidArgument, "the repetitions must be >= 1");
    if (o.array_bytes < 4096 || o.array_bytes % 4096 != 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "the array size must be a positive multiple of 4 KiB");
    const auto t_start = Clock::now();
    const size_t n_arrays = o.copy_and_triad ? 3 : 1;
    const double physical =
        static_cast<double>(sysconf(_SC_PHYS_PAGES)) * static_cast<double>(sysconf(_SC_PAGESIZE));
    if (physical > 0 && static_cast<double>(o.array_bytes) * n_arrays > 0.75 * physical)
        return make_error(
            ErrorCode::kResourceExhausted,
            fmt::format(
                "{} arrays of {} MiB need more than three quarters of this machine's {} MiB "
                "of memory; use smaller arrays",
                n_arrays, o.array_bytes >> 20, static_cast<uint64_t>(physical) >> 20));

    std::vector<AlignedBuffer> arrays;
    try {
        for (size_t i = 0; i < n_arrays; ++i) arrays.emplace_back(o.array_bytes, o.huge_pages);
    } catch (const std::bad_alloc&) {
        return make_error(
            ErrorCode::kResourceExhausted,
            fmt::format("out of memory for {} arrays of {} MiB", n_arrays, o.array_bytes >> 20));
    }
    float* a = arrays[0].as<float>();
    float* b = o.copy_and_triad ? arrays[1].as<float>() : nullptr;
    float* c = o.copy_and_triad ? arrays[2].as<float>() : nullptr;
    const size_t n = o.array_bytes / sizeof(float);

    ThreadPool pool(o.n_threads);
    std::vector<PerThread> per_thread(static_cast<size_t>(o.n_threads));
    auto run = [&](auto&& body) {
        pool.run([&](int ith, int nth) {
            size_t begin, end;
            ThreadPool::split(n, kSplitFloats, ith, nth, begin, end);
            body(per_thread[ith], begin, end);
        });
    };
    auto total_sum = [&] {
        uint64_t s = 0;
        for (const PerThread& t : per_thread) s += t.sum;
        return s;
    };
    auto all_ok = [&] {
        return std::all_of(per_thread.begin(), per_thread.end(),
                           [](const PerThread& t) { return t.ok; });
    };

    // Fill (each thread faults in the pages it will stream) and take the
    // expected checksum with plain code, independent of the kernels.
    run([&](PerThread& t, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) a[i] = memory_probe_element(i);
        if (b) {
            for (size_t i = begin; i < end; ++i) b[i] = triad_b_element(i);
            std::memset(c + begin, 0, (end - begin) * sizeof(float));
        }
        uint64_t s = 0;
        for (size_t i = begin; i < end; i += 2) {
            uint64_t word;
            std::memcpy(&word, a + i, sizeof word);
            s += word;
        }
        t.sum = s;
    });

    MemoryBandwidth result;
    result.n_threads = o.n_threads;
    result.array_bytes = o.array_bytes;
    result.reps = o.reps;
    result.huge_pages = o.huge_pages;
    result.huge_page_bytes = huge_page_bytes_of(arrays);
    result.kernels = kernels::active_tier();
    result.expected_checksum = total_sum();

    auto timed = [&](auto&& body) {
        const auto t0 = Clock::now();
        run(body);
        return std::chrono::duration<double>(Clock::now() - t0).count();
    };
    std::vector<double> read_s, copy_s, triad_s;
    for (int r = 0; r < o.reps; ++r) {
        read_s.push_back(timed([&](PerThread& t, size_t begin, size_t end) {
            t.sum = kernels::stream_read_sum(reinterpret_cast<const uint64_t*>(a + begin),
                                             (end - begin) / 2);
        }));
        result.read_checksum = total_sum();
        if (result.read_checksum != result.expected_checksum)
            return make_error(
                ErrorCode::kInternal,
                fmt::format("the read stream's checksum {:#x} differs from the array's sum {:#x}",
                            result.read_checksum, result.expected_checksum));
    }
    result.read = figure(read_s, static_cast<double>(o.array_bytes));

    if (o.copy_and_triad) {
        for (int r = 0; r < o.reps; ++r)
            copy_s.push_back(timed([&](PerThread&, size_t begin, size_t end) {
                kernels::stream_copy(a + begin, c + begin, end - begin);
            }));
        for (int r = 0; r < o.reps; ++r)
            triad_s.push_back(timed([&](PerThread&, size_t begin, size_t end) {
                kernels::stream_triad(a + begin, b + begin, c + begin, kTriadScale, end - begin);
            }));
        // Every element of both results, checked with plain code.
        run([&](PerThread& t, size_t begin, size_t end) {
            for (size_t i = begin; i < end; ++i) {
                const float original = memory_probe_element(i);
                if (c[i] != original || a[i] != triad_b_element(i) + kTriadScale * original) {
                    t.ok = false;
                    break;
                }
            }
        });
        if (!all_ok())
            return make_error(ErrorCode::kInternal,
                              "the copy or triad stream wrote a wrong element");
        result.copy = figure(copy_s, 2.0 * static_cast<double>(o.array_bytes));
        result.triad = figure(triad_s, 3.0 * static_cast<double>(o.array_bytes));
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    return result;
}

}  // namespace assistd::engine
