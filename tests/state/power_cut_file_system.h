#pragma once
// A rocksdb::FileSystem for tests that knows what a power cut would keep: per
// file, the bytes a sync made durable and whether a directory sync made its
// name durable. cut_power() freezes that (every later change fails, as a dead
// machine writes nothing); power_on(), once the dying store is closed, drops
// the rest from the disk. It can also fail syncs with EIO on demand.
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>

namespace assistd::state::test_support {

class PowerCutFileSystem final : public rocksdb::FileSystemWrapper {
  public:
    explicit PowerCutFileSystem(
        std::shared_ptr<rocksdb::FileSystem> base = rocksdb::FileSystem::Default());
    const char* Name() const override { return "PowerCutFileSystem"; }

    // The cut: what is durable now is all that will survive; every change from
    // now on fails with an I/O error. Reads, closes and unlocks still work.
    void cut_power();
    // Cuts the power as the `changes`-th change from now begins, inside that
    // call (which then fails); 0 disarms.
    void cut_power_after(uint64_t changes);
    // After the store that lived through the cut is closed: truncates every
    // file to its durable bytes, removes files whose name was not durable,
    // then takes changes again, counting everything on disk as durable.
    rocksdb::IOStatus power_on();
    bool powered() const { return powered_.load(); }

    // The next `count` file syncs (of files whose name ends in `name_suffix`)
    // fail with EIO; like Linux after a failed fsync, the bytes they did not
    // make durable never become durable through that file.
    void fail_next_syncs(int count, std::string name_suffix = "");
    int failed_syncs() const { return failed_syncs_.load(); }
    uint64_t changes() const { return changes_.load(); }

    // The files power_on() would cut short or remove, and why: for a failing test's message.
    std::string describe_pending_losses() const;

    rocksdb::IOStatus NewWritableFile(const std::string& path, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus ReopenWritableFile(const std::string& path,
                                         const rocksdb::FileOptions& options,
                                         std::unique_ptr<rocksdb::FSWritableFile>* result,
                                         rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus ReuseWritableFile(const std::string& path, const std::string& old_path,
                                        const rocksdb::FileOptions& options,
                                        std::unique_ptr<rocksdb::FSWritableFile>* result,
                                        rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus NewRandomRWFile(const std::string& path, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                      rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus NewDirectory(const std::string& path, const rocksdb::IOOptions& options,
                                   std::unique_ptr<rocksdb::FSDirectory>* result,
                                   rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus DeleteFile(const std::string& path, const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus Truncate(const std::string& path, size_t size,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus RenameFile(const std::string& from, const std::string& to,
                                 const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus LinkFile(const std::string& from, const std::string& to,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus CreateDir(const std::string& path, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus CreateDirIfMissing(const std::string& path, const rocksdb::IOOptions& options,
                                         rocksdb::IODebugContext* dbg) override;
    rocksdb::IOStatus DeleteDir(const std::string& path, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override;

  private:
    friend class TrackedWritableFile;
    friend class TrackedDirectory;

    // What a power cut would leave of one file written since the last power_on().
    struct FileState {
        uint64_t size = 0;          // bytes written
        uint64_t durable_size = 0;  // bytes a sync made durable
        bool sync_failed = false;   // an EIO: durable_size never grows again
        bool name_durable = false;  // a sync of its directory since it got this name
        // A rename replaced a file with a durable name: what that name holds if the rename is lost.
        std::optional<std::string> replaced_content;
    };

    // Counts a change and checks the power; holds the cut off until the change is recorded.
    class Change {
      public:
        explicit Change(PowerCutFileSystem& fs);
        const rocksdb::IOStatus& status() const { return status_; }

      private:
        std::shared_lock<std::shared_mutex> cut_lock_;
        rocksdb::IOStatus status_;
    };

    // offset: where a positioned append wrote (none: at the end).
    void record_written(const std::string& path, std::optional<uint64_t> offset, uint64_t bytes);
    void record_truncated(const std::string& path, uint64_t size);
    rocksdb::IOStatus record_sync(const std::string& path, std::optional<uint64_t> up_to);
    void record_directory_synced(const std::string& directory);
    // The state of a file opened for writing: a new one, or what is on disk if untracked.
    FileState& track_existing(const std::string& path);
    // Cuts `path` down to its first `bytes` bytes on the base file system.
    rocksdb::IOStatus keep_prefix(const std::string& path, uint64_t bytes);
    // The durable bytes of `path` (all of it when untracked), read from the base file system.
    std::optional<std::string> read_durable_content(const std::string& path);

    std::shared_mutex cut_mu_;  // changes share it; the cut takes it alone
    mutable std::mutex state_mu_;
    std::map<std::string, FileState> files_;
    std::atomic<bool> powered_{true};
    std::atomic<uint64_t> changes_{0};
    std::atomic<uint64_t> cut_at_change_{0};  // 0: no cut scheduled
    int syncs_to_fail_ = 0;
    std::string fail_suffix_;
    std::atomic<int> failed_syncs_{0};
};

// A PowerCutFileSystem on the real disk and an Env over it, for DurableSessionStoreOptions::env.
struct PowerCutEnv {
    std::shared_ptr<PowerCutFileSystem> fs;
    std::unique_ptr<rocksdb::Env> env;
};
PowerCutEnv make_power_cut_env();

}  // namespace assistd::state::test_support
