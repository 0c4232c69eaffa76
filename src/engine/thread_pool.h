#pragma once
// A pool of compute threads that run one job together, ggml-style: the
// caller is thread 0, every thread gets (thread_index, n_threads), and phases
// inside the job are separated by a spinning barrier. Dispatch and barriers
// cost well under a microsecond, which matters when a small model runs
// hundreds of phases per token. Idle workers spin briefly, then sleep.
#include <atomic>
#include <cstddef>
#include <functional>
#include <thread>
#include <vector>

namespace assistd::engine {

class ThreadPool {
public:
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }

    // Runs job(thread_index, n_threads) on every thread and returns when all
    // are done. Not reentrant: one job at a time.
    void run(const std::function<void(int, int)>& job);
    // Runs job(0, 1) on the calling thread alone (barriers inside return at once).
    void run_alone(const std::function<void(int, int)>& job);

    // Inside a job: waits until every thread has reached this point.
    void barrier();

    // Splits [0, n) into n_threads contiguous parts, each a multiple of
    // `align` (except the tail), and returns thread ith's part.
    static void split(size_t n, size_t align, int ith, int nth, size_t& begin, size_t& end);

    // Work units [0, units) shared by nth threads that each call
    // for_each_unit(counters, units, ith, nth, body) with the same counters
    // (nth of them, zero before the first call): body(u) runs once for every
    // unit. Thread ith owns the ith contiguous range (split()) and runs it
    // front to back, so a matmul's weight rows reach it as one stream the
    // hardware prefetcher follows from unit to unit; a thread whose range is
    // done takes units from the back of the range with the most left, so a
    // faster thread does more instead of waiting at the next barrier. Each
    // counter holds the units taken from its range's front (low 32 bits) and
    // back (high 32 bits), so units must stay below 2^32 (a phase has at most
    // a vocabulary's rows).
    struct alignas(64) RangeCounter {
        std::atomic<uint64_t> taken{0};
    };
    template <typename Body>
    static void for_each_unit(RangeCounter* counters, size_t units, int ith, int nth, Body&& body);

private:
    void worker_loop(int index);

    int n_threads_;
    std::vector<std::thread> workers_;
    const std::function<void(int, int)>* job_ = nullptr;
    alignas(64) std::atomic<uint32_t> generation_{0};
    alignas(64) std::atomic<int> finished_{0};
    alignas(64) std::atomic<int> barrier_count_{0};
    alignas(64) std::atomic<uint32_t> barrier_phase_{0};
    std::atomic<bool> stop_{false};
    bool alone_ = false;  // run_alone() in progress (touched by the calling thread only)
};

template <typename Body>
void ThreadPool::for_each_unit(RangeCounter* counters, size_t units, int ith, int nth, Body&& body) {
    constexpr uint64_t kFront = 1, kBack = uint64_t{1} << 32;
    auto left = [](uint64_t taken, size_t size) {
        const size_t used = (taken & 0xffffffffu) + (taken >> 32);
        return used < size ? size - used : 0;
    };
    size_t b, e;
    split(units, 1, ith, nth, b, e);
    std::atomic<uint64_t>& own = counters[ith].taken;
    for (uint64_t taken = own.load(std::memory_order_relaxed); left(taken, e - b) > 0;) {
        if (own.compare_exchange_weak(taken, taken + kFront, std::memory_order_relaxed)) {
            body(b + (taken & 0xffffffffu));
            taken = own.load(std::memory_order_relaxed);
        }
    }
    for (;;) {
        int victim = -1;
        size_t most = 0, victim_end = 0;
        uint64_t taken = 0;
        for (int i = 0; i < nth; ++i) {
            if (i == ith) continue;
            size_t vb, ve;
            split(units, 1, i, nth, vb, ve);
            const uint64_t t = counters[i].taken.load(std::memory_order_relaxed);
            if (left(t, ve - vb) > most) {
                victim = i;
                most = left(t, ve - vb);
                victim_end = ve;
                taken = t;
            }
        }
        if (victim < 0) return;
        if (counters[victim].taken.compare_exchange_strong(taken, taken + kBack, std::memory_order_relaxed))
            body(victim_end - 1 - (taken >> 32));
    }
}

}  // namespace assistd::engine
