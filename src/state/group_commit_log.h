#pragma once
// Leader/follower group commit on RocksDB's write-ahead log. A writer adds its
// operations to the open group, then waits. The first waiter to find no commit
// running becomes the leader: it takes the whole open group, writes it as one
// synced WriteBatch (one fsync) and wakes the others. Writes added during that
// fsync form the next group, so a write waits for the next fsync, never for a
// timer. A failed commit fails its group and every later add and wait: after
// a failed fsync no later sync can vouch for the pages the kernel dropped.
#include <rocksdb/write_batch.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "common/result.h"

namespace rocksdb {
class DB;
}

namespace assistd::state {

class GroupCommitLog {
  public:
    explicit GroupCommitLog(rocksdb::DB& db) : db_(db) {}

    // Puts operations into the open group (`fill` gets its WriteBatch, under
    // the group's lock: keep it to Put/Delete calls). Returns the ticket to
    // wait for; groups commit in ticket order, so the log order is the add order.
    template <typename Fill>
    Result<uint64_t> add(Fill&& fill) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failure_.ok()) return failure_.error();
        fill(open_);
        return ++added_;
    }
    // Returns once the group holding `ticket` is synced, or why it never will be.
    Status wait(uint64_t ticket);
    // Whether every write up to `ticket` is synced.
    bool durable(uint64_t ticket) const;

  private:
    rocksdb::DB& db_;
    mutable std::mutex mu_;
    std::condition_variable committed_;
    rocksdb::WriteBatch open_;  // the next group
    uint64_t added_ = 0;        // the last ticket handed out
    uint64_t durable_ = 0;      // every ticket up to this one is synced
    bool committing_ = false;   // a leader is writing a group
    Status failure_;            // the first failed commit
};

}  // namespace assistd::state
