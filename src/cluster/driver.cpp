#include "cluster/driver.h"

#include <chrono>
#include <future>

namespace assistd::cluster {

ReplicationDriver::ReplicationDriver(Replicator& replicator, int64_t tick_interval_ms)
    : replicator_(replicator), tick_interval_ms_(tick_interval_ms) {
    replicator_.set_wakeup([this] {
        {
            std::lock_guard<std::mutex> lock(mu_);
            woken_ = true;
        }
        cv_.notify_one();
    });
    thread_ = std::thread([this] { loop(); });
}

ReplicationDriver::~ReplicationDriver() {
    replicator_.set_wakeup(nullptr);
    {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

void ReplicationDriver::loop() {
    auto next_tick = std::chrono::steady_clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
        cv_.wait_until(lock, next_tick, [&] { return stopping_ || woken_; });
        if (stopping_) break;
        woken_ = false;
        lock.unlock();
        replicator_.flush();
        if (std::chrono::steady_clock::now() >= next_tick) {
            replicator_.tick();
            next_tick =
                std::chrono::steady_clock::now() + std::chrono::milliseconds(tick_interval_ms_);
        }
        lock.lock();
    }
}

namespace {
// The callback may run after the caller gave up waiting: it holds the promise itself.
Status wait_for(const std::function<void(Replicator::Callback)>& start, int64_t timeout_ms) {
    auto promise = std::make_shared<std::promise<Status>>();
    auto future = promise->get_future();
    start([promise](Status st) { promise->set_value(std::move(st)); });
    // The replicator fails the wait at its own deadline; this margin only guards against a stopped
    // driver.
    if (future.wait_for(std::chrono::milliseconds(timeout_ms + 1000)) !=
        std::future_status::ready) {
        return make_error(ErrorCode::kResourceExhausted,
                          "replication did not answer in time; is the node shutting down?");
    }
    return future.get();
}
}  // namespace

Status ReplicationDriver::await_replication(std::string_view session_id,
                                            const state::crdt::VersionVector& version,
                                            int64_t timeout_ms) {
    std::string id(session_id);
    return wait_for(
        [&](Replicator::Callback cb) {
            replicator_.await_replication(id, version, timeout_ms, std::move(cb));
        },
        timeout_ms);
}

Status ReplicationDriver::read(std::string_view session_id, int64_t timeout_ms) {
    std::string id(session_id);
    return wait_for(
        [&](Replicator::Callback cb) { replicator_.read(id, timeout_ms, std::move(cb)); },
        timeout_ms);
}

}  // namespace assistd::cluster
