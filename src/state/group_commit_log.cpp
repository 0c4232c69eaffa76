#include "state/group_commit_log.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <utility>

namespace assistd::state {

Status GroupCommitLog::wait(uint64_t ticket) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
        if (!failure_.ok()) return failure_;
        if (durable_ >= ticket) return {};
        if (committing_) {
            committed_.wait(lock);
            continue;
        }
        // Lead: commit everything added so far, then wake whoever it covered.
        committing_ = true;
        rocksdb::WriteBatch group = std::exchange(open_, rocksdb::WriteBatch());
        const uint64_t last = added_;
        lock.unlock();
        rocksdb::WriteOptions synced;
        synced.sync = true;
        const rocksdb::Status s = db_.Write(synced, &group);
        lock.lock();
        committing_ = false;
        if (s.ok()) {
            durable_ = last;
        } else {
            failure_ =
                make_error(ErrorCode::kIo,
                           "session store: synced write of the write-ahead log: " + s.ToString());
        }
        committed_.notify_all();
    }
}

bool GroupCommitLog::durable(uint64_t ticket) const {
    std::lock_guard<std::mutex> lock(mu_);
    return durable_ >= ticket;
}

}  // namespace assistd::state
