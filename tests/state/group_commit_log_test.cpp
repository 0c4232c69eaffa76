// GroupCommitLog: a write waits for the next fsync, and the writes that arrive
// while one fsync runs share the next one (leader/follower, no timer).
#include "state/group_commit_log.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace assistd::state {
namespace {

// Built by appending: GCC 12 warns falsely (-Wrestrict) on "k" + std::to_string(...).
std::string key_of(int i) {
    std::string key = "k";
    key += std::to_string(i);
    return key;
}

// The real disk, with a gate on the write-ahead log's syncs: while held, a
// sync waits (and is counted as waiting) until the gate opens.
class GatedSyncFileSystem final : public rocksdb::FileSystemWrapper {
  public:
    GatedSyncFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
    const char* Name() const override { return "GatedSyncFileSystem"; }

    void hold() {
        std::lock_guard<std::mutex> lock(mu_);
        held_ = true;
    }
    void release() {
        std::lock_guard<std::mutex> lock(mu_);
        held_ = false;
        changed_.notify_all();
    }
    void wait_until_waiting(int syncs) {
        std::unique_lock<std::mutex> lock(mu_);
        changed_.wait(lock, [&] { return waiting_ >= syncs; });
    }
    int log_syncs() const {
        std::lock_guard<std::mutex> lock(mu_);
        return log_syncs_;
    }

    rocksdb::IOStatus NewWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
        auto s = target()->NewWritableFile(path, options, result, dbg);
        if (s.ok() && path.ends_with(".log"))
            *result = std::make_unique<GatedFile>(std::move(*result), *this);
        return s;
    }

  private:
    class GatedFile final : public rocksdb::FSWritableFileOwnerWrapper {
      public:
        GatedFile(std::unique_ptr<rocksdb::FSWritableFile> file, GatedSyncFileSystem& fs)
            : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}
        rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
            fs_.pass_gate();
            return target()->Sync(o, d);
        }
        rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* d) override {
            fs_.pass_gate();
            return target()->Fsync(o, d);
        }

      private:
        GatedSyncFileSystem& fs_;
    };

    void pass_gate() {
        std::unique_lock<std::mutex> lock(mu_);
        ++waiting_;
        changed_.notify_all();
        changed_.wait(lock, [&] { return !held_; });
        --waiting_;
        ++log_syncs_;
    }

    mutable std::mutex mu_;
    std::condition_variable changed_;
    bool held_ = false;
    int waiting_ = 0;
    int log_syncs_ = 0;
};

class GroupCommitLogTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = (std::filesystem::temp_directory_path() /
                ("assistd_group_commit_" + std::to_string(getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                   .string();
        std::filesystem::remove_all(dir_);
        fs_ = std::make_shared<GatedSyncFileSystem>();
        env_ = rocksdb::NewCompositeEnv(fs_);
        rocksdb::Options options;
        options.create_if_missing = true;
        options.env = env_.get();
        rocksdb::DB* raw = nullptr;
        ASSERT_TRUE(rocksdb::DB::Open(options, dir_, &raw).ok());
        db_.reset(raw);
    }
    void TearDown() override {
        db_.reset();
        std::filesystem::remove_all(dir_);
    }

    static auto put(std::string key) {
        return [key = std::move(key)](rocksdb::WriteBatch& batch) { batch.Put(key, "v"); };
    }

    std::string dir_;
    std::shared_ptr<GatedSyncFileSystem> fs_;
    std::unique_ptr<rocksdb::Env> env_;
    std::unique_ptr<rocksdb::DB> db_;
};

TEST_F(GroupCommitLogTest, WritesArrivingDuringAnFsyncShareTheNextOne) {
    GroupCommitLog log(*db_);
    fs_->hold();
    const int syncs_before = fs_->log_syncs();

    // The first writer leads: its group (itself) is stuck in the fsync.
    Status first_status;
    std::thread first([&] {
        auto ticket = log.add(put(key_of(0)));
        ASSERT_TRUE(ticket.ok());
        first_status = log.wait(*ticket);
    });
    fs_->wait_until_waiting(1);

    // Three more arrive meanwhile and wait for it to finish.
    std::vector<uint64_t> tickets;
    for (int i = 1; i <= 3; ++i) {
        auto ticket = log.add(put(key_of(i)));
        ASSERT_TRUE(ticket.ok());
        EXPECT_FALSE(log.durable(*ticket));
        tickets.push_back(*ticket);
    }
    std::vector<Status> statuses(tickets.size());
    std::vector<std::thread> followers;
    for (size_t i = 0; i < tickets.size(); ++i)
        followers.emplace_back([&, i] { statuses[i] = log.wait(tickets[i]); });

    fs_->release();
    first.join();
    for (auto& t : followers) t.join();
    EXPECT_TRUE(first_status.ok());
    for (const auto& st : statuses) EXPECT_TRUE(st.ok()) << st.error().message;
    EXPECT_TRUE(log.durable(tickets.back()));
    EXPECT_EQ(fs_->log_syncs() - syncs_before, 2) << "the three late writes were not one group";
    for (int i = 0; i <= 3; ++i) {
        std::string value;
        EXPECT_TRUE(db_->Get(rocksdb::ReadOptions(), key_of(i), &value).ok()) << i;
    }
}

TEST_F(GroupCommitLogTest, ALoneWriteIsSyncedAtOnce) {
    GroupCommitLog log(*db_);
    const int syncs_before = fs_->log_syncs();
    auto ticket = log.add(put("alone"));
    ASSERT_TRUE(ticket.ok());
    EXPECT_FALSE(log.durable(*ticket)) << "nothing is synced before somebody waits";
    ASSERT_TRUE(log.wait(*ticket).ok());
    EXPECT_TRUE(log.durable(*ticket));
    EXPECT_EQ(fs_->log_syncs() - syncs_before, 1);
}

}  // namespace
}  // namespace assistd::state
