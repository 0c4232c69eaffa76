#pragma once
// Runs a Replicator in real time: one thread that flushes as soon as local
// writes wake it and ticks every tick_interval_ms. Frames arrive on the
// transport's threads (Replicator::receive is thread-safe).
#include <condition_variable>
#include <mutex>
#include <thread>

#include "cluster/replicator.h"

namespace assistd::cluster {

class ReplicationDriver {
  public:
    ReplicationDriver(Replicator& replicator, int64_t tick_interval_ms = 20);
    ~ReplicationDriver();  // stops the thread
    ReplicationDriver(const ReplicationDriver&) = delete;
    ReplicationDriver& operator=(const ReplicationDriver&) = delete;

    // Blocking form of Replicator::await_replication, for request threads.
    Status await_replication(std::string_view session_id, const state::crdt::VersionVector& version,
                             int64_t timeout_ms);
    // Blocking form of Replicator::read.
    Status read(std::string_view session_id, int64_t timeout_ms);

  private:
    void loop();

    Replicator& replicator_;
    int64_t tick_interval_ms_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool woken_ = false;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace assistd::cluster
