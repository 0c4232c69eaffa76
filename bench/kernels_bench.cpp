// Matmul kernel figures on the active tier: GB/s of weights streamed for
// matvec (nb = 1, decode) with 1 and 2 threads, and GFLOP/s for nb = 128
// (prefill) with 2 threads. Prints figures only; never fails on time.
//
//   kernels_bench [--quick] [--types f16,bf16,f32,q8_0]
// ASSISTD_CPU=avx2|avx512|scalar caps the tier.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/dtype.h"
#include "engine/kernels/kernels.h"

namespace {

using assistd::engine::DType;
namespace kernels = assistd::engine::kernels;
using Clock = std::chrono::steady_clock;

// Threads started once and released together by a spinning generation
// counter, so thread start-up and sleeping are not part of what is measured.
class SpinningWorkers {
public:
    explicit SpinningWorkers(int n_threads) : n_threads_(n_threads) {
        for (int id = 1; id < n_threads; ++id) threads_.emplace_back([this, id] { worker_loop(id); });
    }
    ~SpinningWorkers() {
        stop_.store(true, std::memory_order_release);
        generation_.fetch_add(1, std::memory_order_acq_rel);
        for (auto& t : threads_) t.join();
    }
    int size() const { return n_threads_; }

    // Runs job(thread_id) on every thread, the caller being thread 0.
    void run(const std::function<void(int)>& job) {
        job_ = &job;
        finished_.store(0, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_acq_rel);
        job(0);
        while (finished_.load(std::memory_order_acquire) != n_threads_ - 1) {
        }
    }

private:
    void worker_loop(int id) {
        uint64_t seen = 0;
        for (;;) {
            uint64_t now;
            while ((now = generation_.load(std::memory_order_acquire)) == seen) {
            }
            seen = now;
            if (stop_.load(std::memory_order_acquire)) return;
            (*job_)(id);
            finished_.fetch_add(1, std::memory_order_acq_rel);
        }
    }

    int n_threads_;
    std::vector<std::thread> threads_;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> finished_{0};
    std::atomic<bool> stop_{false};
    const std::function<void(int)>* job_ = nullptr;
};

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};
using Bytes = std::unique_ptr<unsigned char, FreeDeleter>;

Bytes aligned_bytes(size_t n) {
    return Bytes(static_cast<unsigned char*>(std::aligned_alloc(64, (n + 63) / 64 * 64)));
}

struct Shape {
    const char* model;
    size_t rows;
    size_t cols;
};

// Weight copies to rotate through, so each call streams from DRAM as in a real
// decode step (the whole model does not fit in L3) rather than from cache.
struct WeightCopies {
    std::vector<Bytes> copies;
    size_t bytes = 0;
};

WeightCopies make_weights(DType type, const Shape& shape, size_t min_total_bytes) {
    WeightCopies w;
    w.bytes = assistd::engine::dtype_row_bytes(type, shape.cols) * shape.rows;
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    std::vector<float> source(shape.rows * shape.cols);
    for (float& f : source) f = dist(rng);
    const size_t n_copies = std::max<size_t>(1, (min_total_bytes + w.bytes - 1) / w.bytes);
    for (size_t c = 0; c < n_copies; ++c) {
        Bytes copy = aligned_bytes(w.bytes);
        if (c == 0) {
            kernels::convert_rows(DType::F32, source.data(), type, copy.get(), source.size());
        } else {
            std::memcpy(copy.get(), w.copies[0].get(), w.bytes);
        }
        w.copies.push_back(std::move(copy));
    }
    return w;
}

// Rate per call (units per second), timed call by call for at least
// `min_seconds`. Other processes share these 2 cores, and a call that was
// preempted says nothing about the kernel, so besides the median we report
// the 90th-percentile rate (the 10th-percentile call time).
struct Rates {
    double p90;
    double median;
};

// `call(iteration)` runs one call and returns the units (bytes or flops) it processed.
Rates rate_per_call(const std::function<double(size_t)>& call, double min_seconds) {
    std::vector<double> rates;
    call(0);  // warm-up
    const auto start = Clock::now();
    size_t iteration = 1;
    while (rates.size() < 20 || std::chrono::duration<double>(Clock::now() - start).count() < min_seconds) {
        const auto before = Clock::now();
        const double units = call(iteration++);
        rates.push_back(units / std::chrono::duration<double>(Clock::now() - before).count());
    }
    std::sort(rates.begin(), rates.end());
    return {rates[rates.size() * 9 / 10], rates[rates.size() / 2]};
}

// Rows [r0, r1) of thread `id` out of n within [begin, end): contiguous slices on multiples of 4.
std::pair<size_t, size_t> slice_of(size_t begin, size_t end, int id, int n) {
    const size_t rows = end - begin;
    auto boundary = [&](int k) { return begin + std::min(rows, (rows * k / n + 3) / 4 * 4); };
    return {boundary(id), id + 1 == n ? end : boundary(id + 1)};
}

// Calls stream a window of at most this many weight bytes (and flops), so a
// call is short enough (about a ms) to finish between preemptions; a window is contiguous rows,
// which is exactly how a whole-matrix call streams.
constexpr size_t kWindowBytes = size_t{16} << 20;
constexpr double kWindowFlops = 2e8;

// Returns rates in weight bytes/s and flop/s.
std::pair<Rates, Rates> measure(SpinningWorkers& workers, DType type, const Shape& shape, const WeightCopies& w,
                                size_t nb, double min_seconds) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    std::vector<float> x(nb * shape.cols);
    for (float& f : x) f = dist(rng);
    Bytes prepared = aligned_bytes(kernels::activation_row_bytes(type, shape.cols) * nb);
    kernels::prepare_activations(type, x.data(), shape.cols, nb, shape.cols, prepared.get());
    std::vector<float> y(nb * shape.rows);
    const size_t row_bytes = assistd::engine::dtype_row_bytes(type, shape.cols);
    const size_t rows_by_bytes = kWindowBytes / row_bytes;
    const size_t rows_by_flops = static_cast<size_t>(kWindowFlops / (2.0 * static_cast<double>(shape.cols * nb)));
    const size_t window_rows = std::min(shape.rows, std::max<size_t>(8, std::min(rows_by_bytes, rows_by_flops) / 4 * 4));
    const size_t windows = (shape.rows + window_rows - 1) / window_rows;
    const void* current = nullptr;
    size_t window_begin = 0, window_end = 0;
    const std::function<void(int)> job = [&](int id) {
        const auto [r0, r1] = slice_of(window_begin, window_end, id, workers.size());
        kernels::matmul(type, current, shape.cols, prepared.get(), nb, y.data(), shape.rows, r0, r1);
    };
    const auto call = [&](size_t iteration) {
        current = w.copies[(iteration / windows) % w.copies.size()].get();
        window_begin = (iteration % windows) * window_rows;
        window_end = std::min(shape.rows, window_begin + window_rows);
        workers.run(job);
        return static_cast<double>(window_end - window_begin);
    };
    const Rates rows_per_second = rate_per_call(call, min_seconds);
    const double bytes_per_row = static_cast<double>(row_bytes);
    const double flops_per_row = 2.0 * static_cast<double>(shape.cols * nb);
    return {{rows_per_second.p90 * bytes_per_row, rows_per_second.median * bytes_per_row},
            {rows_per_second.p90 * flops_per_row, rows_per_second.median * flops_per_row}};
}

}  // namespace

int main(int argc, char** argv) {
    bool quick = false;
    std::string type_list = "f16,bf16,f32,q8_0";
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0) quick = true;
        if (std::strcmp(argv[i], "--types") == 0 && i + 1 < argc) type_list = argv[++i];
    }
    const double min_seconds = quick ? 0.05 : 0.25;
    const size_t rotate_bytes = size_t{256} << 20;

    const Shape decode_shapes[] = {
        {"llama-1b", 2048, 2048},  {"llama-1b", 8192, 2048},  {"llama-1b", 2048, 8192}, {"llama-1b", 32000, 2048},
        {"smollm-135m", 576, 576}, {"smollm-135m", 192, 576}, {"smollm-135m", 1536, 576},
        {"smollm-135m", 576, 1536}, {"smollm-135m", 49152, 576},
    };
    const Shape prefill_shapes[] = {
        {"llama-1b", 2048, 2048}, {"llama-1b", 8192, 2048}, {"llama-1b", 2048, 8192},
        {"smollm-135m", 576, 576}, {"smollm-135m", 1536, 576},
    };

    std::printf("kernel tier: %s\n", kernels::active_tier());
    std::printf("nb=1: GB/s of weight bytes per call; 'stream' rotates copies over >= 256 MiB (DRAM, as in decode),\n"
                "'hot' repeats one matrix (cache-resident where it fits). Calls cover <= 16 MiB / 0.2 GFLOP of rows.\n"
                "Each figure: 90th-percentile rate over calls (median in parentheses).\n\n");
    SpinningWorkers one_thread(1);
    SpinningWorkers two_threads(2);

    size_t start = 0;
    while (start < type_list.size()) {
        size_t end = type_list.find(',', start);
        if (end == std::string::npos) end = type_list.size();
        const std::string name = type_list.substr(start, end - start);
        start = end + 1;
        const auto type = assistd::engine::dtype_from_name(name);
        if (!type) {
            std::fprintf(stderr, "unknown type %s\n", name.c_str());
            continue;
        }
        std::printf("== %s ==\n", name.c_str());
        std::printf("%-12s %6s x %-6s %7s | %-13s %-13s | %-13s %-13s\n", "model", "rows", "cols", "MiB", "stream 1T",
                    "stream 2T", "hot 1T", "hot 2T");
        for (const Shape& shape : decode_shapes) {
            const WeightCopies streaming = make_weights(*type, shape, rotate_bytes);
            WeightCopies hot;
            hot.bytes = streaming.bytes;
            hot.copies.push_back(aligned_bytes(streaming.bytes));
            std::memcpy(hot.copies[0].get(), streaming.copies[0].get(), streaming.bytes);
            const Rates s1 = measure(one_thread, *type, shape, streaming, 1, min_seconds).first;
            const Rates s2 = measure(two_threads, *type, shape, streaming, 1, min_seconds).first;
            const Rates h1 = measure(one_thread, *type, shape, hot, 1, min_seconds).first;
            const Rates h2 = measure(two_threads, *type, shape, hot, 1, min_seconds).first;
            std::printf("%-12s %6zu x %-6zu %7.2f | %5.1f (%5.1f) %5.1f (%5.1f) | %5.1f (%5.1f) %5.1f (%5.1f)\n",
                        shape.model, shape.rows, shape.cols, static_cast<double>(streaming.bytes) / (1 << 20),
                        s1.p90 / 1e9, s1.median / 1e9, s2.p90 / 1e9, s2.median / 1e9, h1.p90 / 1e9, h1.median / 1e9,
                        h2.p90 / 1e9, h2.median / 1e9);
            std::fflush(stdout);
        }
        constexpr size_t kPrefillBatch = 128;
        std::printf("%-12s %6s x %-6s  nb=%zu GFLOP/s, 1 and 2 threads\n", "model", "rows", "cols", kPrefillBatch);
        for (const Shape& shape : prefill_shapes) {
            const WeightCopies w = make_weights(*type, shape, 0);
            const Rates one = measure(one_thread, *type, shape, w, kPrefillBatch, min_seconds).second;
            const Rates two = measure(two_threads, *type, shape, w, kPrefillBatch, min_seconds).second;
            std::printf("%-12s %6zu x %-6zu  1T %6.1f (%6.1f)  2T %6.1f (%6.1f)\n", shape.model, shape.rows,
                        shape.cols, one.p90 / 1e9, one.median / 1e9, two.p90 / 1e9, two.median / 1e9);
            std::fflush(stdout);
        }
        std::printf("\n");
    }
    return 0;
}
