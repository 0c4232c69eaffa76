#include "engine/thread_pool.h"

#include <immintrin.h>
#include <sched.h>

#include <algorithm>

namespace assistd::engine {
namespace {
// How long an idle worker spins before it sleeps: long enough to cover the
// gap between two decode steps of a busy server, short enough not to burn a
// core when idle.
constexpr int kSpinsBeforeSleep = 1 << 16;
// Inside a job the threads normally meet within microseconds.
constexpr int kSpinsBeforeYield = 1 << 12;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& job) {
    if (n_threads_ == 1) {
        job(0, 1);
        return;
    }
    job_ = &job;
    finished_.store(0, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    generation_.notify_all();
    job(0, n_threads_);
    int spins = 0;
    while (finished_.load(std::memory_order_acquire) != n_threads_ - 1) {
        if (++spins < kSpinsBeforeYield) {
            _mm_pause();
        } else {
            sched_yield();
        }
    }
    job_ = nullptr;
}

void ThreadPool::run_alone(const std::function<void(int, int)>& job) {
    alone_ = true;
    job(0, 1);
    alone_ = false;
}

void ThreadPool::worker_loop(int index) {
    // Jobs are numbered from the pool's creation: a worker that starts late
    // must still see the first one.
    uint32_t seen = 0;
    for (;;) {
        int spins = 0;
        uint32_t now;
        while ((now = generation_.load(std::memory_order_acquire)) == seen) {
            if (++spins < kSpinsBeforeSleep) {
                _mm_pause();
            } else {
                generation_.wait(seen, std::memory_order_acquire);
            }
        }
        seen = now;
        if (stop_.load(std::memory_order_acquire)) return;
        (*job_)(index, n_threads_);
        finished_.fetch_add(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::barrier() {
    if (n_threads_ == 1 || alone_) return;
    const uint32_t phase = barrier_phase_.load(std::memory_order_acquire);
    if (barrier_count_.fetch_add(1, std::memory_order_acq_rel) == n_threads_ - 1) {
        barrier_count_.store(0, std::memory_order_relaxed);
        barrier_phase_.fetch_add(1, std::memory_order_acq_rel);
        return;
    }
    // Spin briefly; if the other threads are not running (an oversubscribed
    // machine), give the core away instead of burning our time slice.
    int spins = 0;
    while (barrier_phase_.load(std::memory_order_acquire) == phase) {
        if (++spins < kSpinsBeforeYield) {
            _mm_pause();
        } else {
            sched_yield();
        }
    }
}

void ThreadPool::split(size_t n, size_t align, int ith, int nth, size_t& begin, size_t& end) {
    const size_t units = (n + align - 1) / align;
    const size_t per = units / nth, extra = units % nth;
    const size_t u0 = ith * per + std::min<size_t>(ith, extra);
    const size_t u1 = u0 + per + (static_cast<size_t>(ith) < extra ? 1 : 0);
    begin = std::min(n, u0 * align);
    end = std::min(n, u1 * align);
}

}  // namespace assistd::engine
