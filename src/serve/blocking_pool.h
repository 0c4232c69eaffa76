#pragma once
// Threads for work that waits: a session store's writes wait for an fsync
// and, in a fleet, for replicas' acks, fetches and quorum reads. The HTTP I/O
// threads hand such work here and suspend the request's coroutine, so a slow
// disk or a stalled peer never holds up a probe or another client's stream.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace assistd::serve {

class BlockingPool {
public:
    explicit BlockingPool(size_t threads);
    ~BlockingPool();  // stop()
    BlockingPool(const BlockingPool&) = delete;
    BlockingPool& operator=(const BlockingPool&) = delete;

    // Runs `work` on one of the threads, in the order posted. False after
    // stop(): the work was dropped, not run.
    bool post(std::function<void()> work);
    // Runs what was posted before, then joins the threads.
    void stop();
    size_t threads() const { return threads_.size(); }
    size_t queued() const;

private:
    void loop();

    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace assistd::serve
