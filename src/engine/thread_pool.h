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

}  // namespace assistd::engine
