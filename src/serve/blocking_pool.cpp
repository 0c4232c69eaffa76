#include "serve/blocking_pool.h"

#include <algorithm>

namespace assistd::serve {

BlockingPool::BlockingPool(size_t threads) {
    for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) threads_.emplace_back([this] { loop(); });
}

BlockingPool::~BlockingPool() { stop(); }

bool BlockingPool::post(std::function<void()> work) {
    {
        std::lock_guard lk(mu_);
        if (stopping_) return false;
        queue_.push_back(std::move(work));
    }
    cv_.notify_one();
    return true;
}

void BlockingPool::stop() {
    {
        std::lock_guard lk(mu_);
        if (stopping_ && threads_.empty()) return;
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

size_t BlockingPool::queued() const {
    std::lock_guard lk(mu_);
    return queue_.size();
}

void BlockingPool::loop() {
    for (;;) {
        std::function<void()> work;
        {
            std::unique_lock lk(mu_);
            cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and everything posted before has run
            work = std::move(queue_.front());
            queue_.pop_front();
        }
        work();
    }
}

}  // namespace assistd::serve
