#include "power_cut_file_system.h"

#include <rocksdb/system_clock.h>

#include <algorithm>
#include <filesystem>
#include <vector>

namespace assistd::state::test_support {
namespace {

using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

std::string normal(const std::string& path) {
    std::string p = std::filesystem::path(path).lexically_normal().string();
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

std::string parent_of(const std::string& normal_path) {
    return std::filesystem::path(normal_path).parent_path().string();
}

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

IOStatus powered_off_error() {
    return IOStatus::IOError("power cut: the machine is off, nothing is written");
}

}  // namespace

// Records every write and sync of one file in the file system's model.
class TrackedWritableFile final : public rocksdb::FSWritableFileOwnerWrapper {
  public:
    TrackedWritableFile(std::unique_ptr<rocksdb::FSWritableFile> file, PowerCutFileSystem& fs,
                        std::string path)
        : FSWritableFileOwnerWrapper(std::move(file)), fs_(fs), path_(std::move(path)) {}

    IOStatus Append(const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        auto s = target()->Append(data, options, dbg);
        if (s.ok()) fs_.record_written(path_, std::nullopt, data.size());
        return s;
    }
    IOStatus Append(const Slice& data, const IOOptions& options,
                    const rocksdb::DataVerificationInfo& info, IODebugContext* dbg) override {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        auto s = target()->Append(data, options, info, dbg);
        if (s.ok()) fs_.record_written(path_, std::nullopt, data.size());
        return s;
    }
    IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                              IODebugContext* dbg) override {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        auto s = target()->PositionedAppend(data, offset, options, dbg);
        if (s.ok()) fs_.record_written(path_, offset, data.size());
        return s;
    }
    IOStatus PositionedAppend(const Slice& data, uint64_t offset, const IOOptions& options,
                              const rocksdb::DataVerificationInfo& info,
                              IODebugContext* dbg) override {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        auto s = target()->PositionedAppend(data, offset, options, info, dbg);
        if (s.ok()) fs_.record_written(path_, offset, data.size());
        return s;
    }
    IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        auto s = target()->Truncate(size, options, dbg);
        if (s.ok()) fs_.record_truncated(path_, size);
        return s;
    }
    // The base is not asked to sync: durability is what the model says, and
    // real fsyncs would only slow the rounds down.
    IOStatus Sync(const IOOptions&, IODebugContext*) override { return sync(std::nullopt); }
    IOStatus Fsync(const IOOptions&, IODebugContext*) override { return sync(std::nullopt); }
    IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions&,
                       IODebugContext*) override {
        return sync(offset + nbytes);
    }

  private:
    IOStatus sync(std::optional<uint64_t> up_to) {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        return fs_.record_sync(path_, up_to);
    }

    PowerCutFileSystem& fs_;
    const std::string path_;
};

// A directory whose sync makes the names of the files in it durable.
class TrackedDirectory final : public rocksdb::FSDirectoryWrapper {
  public:
    TrackedDirectory(std::unique_ptr<rocksdb::FSDirectory> dir, PowerCutFileSystem& fs,
                     std::string path)
        : FSDirectoryWrapper(std::move(dir)), fs_(fs), path_(std::move(path)) {}

    IOStatus Fsync(const IOOptions&, IODebugContext*) override { return sync(); }
    IOStatus FsyncWithDirOptions(const IOOptions&, IODebugContext*,
                                 const rocksdb::DirFsyncOptions&) override {
        return sync();
    }

  private:
    IOStatus sync() {
        PowerCutFileSystem::Change change(fs_);
        if (!change.status().ok()) return change.status();
        fs_.record_directory_synced(path_);
        return IOStatus::OK();
    }

    PowerCutFileSystem& fs_;
    const std::string path_;
};

PowerCutFileSystem::Change::Change(PowerCutFileSystem& fs) {
    const uint64_t n = fs.changes_.fetch_add(1) + 1;
    uint64_t cut_at = fs.cut_at_change_.load();
    if (cut_at != 0 && n >= cut_at && fs.cut_at_change_.compare_exchange_strong(cut_at, 0))
        fs.cut_power();
    cut_lock_ = std::shared_lock<std::shared_mutex>(fs.cut_mu_);
    if (!fs.powered_.load()) status_ = powered_off_error();
}

PowerCutFileSystem::PowerCutFileSystem(std::shared_ptr<rocksdb::FileSystem> base)
    : rocksdb::FileSystemWrapper(base) {}

void PowerCutFileSystem::cut_power() {
    std::unique_lock<std::shared_mutex> lock(cut_mu_);
    powered_.store(false);
}

void PowerCutFileSystem::cut_power_after(uint64_t changes) {
    cut_at_change_.store(changes == 0 ? 0 : changes_.load() + changes);
}

rocksdb::IOStatus PowerCutFileSystem::power_on() {
    std::unique_lock<std::shared_mutex> cut_lock(cut_mu_);
    std::lock_guard<std::mutex> lock(state_mu_);
    cut_at_change_.store(0);
    IOStatus result;
    const IOOptions io;
    for (const auto& [path, file] : files_) {
        IOStatus s;
        if (!file.name_durable) {
            if (file.replaced_content) {
                s = rocksdb::WriteStringToFile(target_.get(), *file.replaced_content, path, false);
            } else {
                s = target_->DeleteFile(path, io, nullptr);
                if (s.IsNotFound() || s.IsPathNotFound()) s = IOStatus::OK();
            }
        } else if (file.size > file.durable_size || file.sync_failed) {
            s = keep_prefix(path, file.durable_size);
        }
        if (!s.ok() && result.ok()) result = s;
    }
    files_.clear();
    powered_.store(true);
    return result;
}

void PowerCutFileSystem::fail_next_syncs(int count, std::string name_suffix) {
    std::lock_guard<std::mutex> lock(state_mu_);
    syncs_to_fail_ = count;
    fail_suffix_ = std::move(name_suffix);
}

std::string PowerCutFileSystem::describe_pending_losses() const {
    std::lock_guard<std::mutex> lock(state_mu_);
    std::string out;
    for (const auto& [path, file] : files_) {
        if (file.name_durable && file.size == file.durable_size && !file.sync_failed) continue;
        out += path + ": written " + std::to_string(file.size) + ", durable " +
               std::to_string(file.durable_size) + (file.name_durable ? "" : ", name not durable") +
               (file.sync_failed ? ", a sync failed" : "") + "\n";
    }
    return out;
}

void PowerCutFileSystem::record_written(const std::string& path, std::optional<uint64_t> offset,
                                        uint64_t bytes) {
    std::lock_guard<std::mutex> lock(state_mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return;  // renamed or deleted while open: nothing to keep
    FileState& f = it->second;
    f.size = offset ? std::max(f.size, *offset + bytes) : f.size + bytes;
}

void PowerCutFileSystem::record_truncated(const std::string& path, uint64_t size) {
    std::lock_guard<std::mutex> lock(state_mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return;
    it->second.size = size;
    it->second.durable_size = std::min(it->second.durable_size, size);
}

rocksdb::IOStatus PowerCutFileSystem::record_sync(const std::string& path,
                                                  std::optional<uint64_t> up_to) {
    std::lock_guard<std::mutex> lock(state_mu_);
    auto it = files_.find(path);
    if (syncs_to_fail_ > 0 && ends_with(path, fail_suffix_)) {
        --syncs_to_fail_;
        failed_syncs_.fetch_add(1);
        if (it != files_.end()) it->second.sync_failed = true;
        return IOStatus::IOError("injected EIO: fsync of " + path + " failed");
    }
    if (it == files_.end()) return IOStatus::OK();
    FileState& f = it->second;
    if (!f.sync_failed)
        f.durable_size = std::max(f.durable_size, up_to ? std::min(f.size, *up_to) : f.size);
    return IOStatus::OK();
}

void PowerCutFileSystem::record_directory_synced(const std::string& directory) {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (auto& [path, file] : files_) {
        if (parent_of(path) != directory) continue;
        file.name_durable = true;
        file.replaced_content.reset();
    }
}

PowerCutFileSystem::FileState& PowerCutFileSystem::track_existing(const std::string& path) {
    auto [it, inserted] = files_.try_emplace(path);
    if (inserted) {
        uint64_t size = 0;
        const bool exists = target_->GetFileSize(path, IOOptions(), &size, nullptr).ok();
        it->second.size = it->second.durable_size = exists ? size : 0;
        it->second.name_durable = exists;
    }
    return it->second;
}

// Rewritten rather than truncated: the POSIX file system does not implement Truncate.
rocksdb::IOStatus PowerCutFileSystem::keep_prefix(const std::string& path, uint64_t bytes) {
    std::string content;
    auto s = rocksdb::ReadFileToString(target_.get(), path, &content);
    if (!s.ok()) return s;
    content.resize(std::min<uint64_t>(content.size(), bytes));
    return rocksdb::WriteStringToFile(target_.get(), content, path, false);
}

std::optional<std::string> PowerCutFileSystem::read_durable_content(const std::string& path) {
    std::string content;
    if (!rocksdb::ReadFileToString(target_.get(), path, &content).ok()) return std::nullopt;
    auto it = files_.find(path);
    if (it != files_.end()) {
        if (!it->second.name_durable) return it->second.replaced_content;
        content.resize(std::min<uint64_t>(content.size(), it->second.durable_size));
    }
    return content;
}

IOStatus PowerCutFileSystem::NewWritableFile(const std::string& path,
                                             const rocksdb::FileOptions& options,
                                             std::unique_ptr<rocksdb::FSWritableFile>* result,
                                             IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    const std::string p = normal(path);
    const bool existed = target_->FileExists(p, IOOptions(), nullptr).ok();
    std::unique_ptr<rocksdb::FSWritableFile> file;
    auto s = target_->NewWritableFile(path, options, &file, dbg);
    if (!s.ok()) return s;
    {
        std::lock_guard<std::mutex> lock(state_mu_);
        auto it = files_.find(p);
        FileState fresh;
        // Truncating an existing file keeps its name as durable as it was.
        fresh.name_durable = it != files_.end() ? it->second.name_durable : existed;
        if (it != files_.end()) fresh.replaced_content = it->second.replaced_content;
        files_[p] = std::move(fresh);
    }
    *result = std::make_unique<TrackedWritableFile>(std::move(file), *this, p);
    return s;
}

IOStatus PowerCutFileSystem::ReopenWritableFile(const std::string& path,
                                                const rocksdb::FileOptions& options,
                                                std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    const std::string p = normal(path);
    {
        std::lock_guard<std::mutex> lock(state_mu_);
        track_existing(p);
    }
    std::unique_ptr<rocksdb::FSWritableFile> file;
    auto s = target_->ReopenWritableFile(path, options, &file, dbg);
    if (!s.ok()) return s;
    *result = std::make_unique<TrackedWritableFile>(std::move(file), *this, p);
    return s;
}

IOStatus PowerCutFileSystem::ReuseWritableFile(const std::string&, const std::string&,
                                               const rocksdb::FileOptions&,
                                               std::unique_ptr<rocksdb::FSWritableFile>*,
                                               IODebugContext*) {
    return IOStatus::NotSupported("PowerCutFileSystem does not model recycled log files");
}

IOStatus PowerCutFileSystem::NewRandomRWFile(const std::string& path,
                                             const rocksdb::FileOptions& options,
                                             std::unique_ptr<rocksdb::FSRandomRWFile>* result,
                                             IODebugContext* dbg) {
    // The session store never opens one; refusing keeps unmodelled writes out.
    (void)path, (void)options, (void)result, (void)dbg;
    return IOStatus::NotSupported("PowerCutFileSystem does not model random-access writes");
}

IOStatus PowerCutFileSystem::NewDirectory(const std::string& path, const IOOptions& options,
                                          std::unique_ptr<rocksdb::FSDirectory>* result,
                                          IODebugContext* dbg) {
    std::unique_ptr<rocksdb::FSDirectory> dir;
    auto s = target_->NewDirectory(path, options, &dir, dbg);
    if (!s.ok()) return s;
    *result = std::make_unique<TrackedDirectory>(std::move(dir), *this, normal(path));
    return s;
}

// A deletion counts as durable at once: a file that a real cut would bring back is not modelled.
IOStatus PowerCutFileSystem::DeleteFile(const std::string& path, const IOOptions& options,
                                        IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    auto s = target_->DeleteFile(path, options, dbg);
    if (s.ok()) {
        std::lock_guard<std::mutex> lock(state_mu_);
        files_.erase(normal(path));
    }
    return s;
}

IOStatus PowerCutFileSystem::Truncate(const std::string& path, size_t size,
                                      const IOOptions& options, IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    const std::string p = normal(path);
    {
        std::lock_guard<std::mutex> lock(state_mu_);
        track_existing(p);
    }
    auto s = target_->Truncate(path, size, options, dbg);
    if (s.ok()) record_truncated(p, size);
    return s;
}

// The new name is durable after a sync of its directory; until then a cut
// brings back what the name held before (the old name is not brought back).
IOStatus PowerCutFileSystem::RenameFile(const std::string& from, const std::string& to,
                                        const IOOptions& options, IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    const std::string f = normal(from), t = normal(to);
    std::lock_guard<std::mutex> lock(state_mu_);
    FileState moved = track_existing(f);
    std::optional<std::string> replaced = read_durable_content(t);
    auto s = target_->RenameFile(from, to, options, dbg);
    if (!s.ok()) return s;
    files_.erase(f);
    moved.name_durable = false;
    moved.replaced_content = std::move(replaced);
    files_[t] = std::move(moved);
    return s;
}

IOStatus PowerCutFileSystem::LinkFile(const std::string& from, const std::string& to,
                                      const IOOptions& options, IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    const std::string f = normal(from), t = normal(to);
    std::lock_guard<std::mutex> lock(state_mu_);
    FileState linked = track_existing(f);
    auto s = target_->LinkFile(from, to, options, dbg);
    if (!s.ok()) return s;
    linked.name_durable = false;
    linked.replaced_content.reset();
    files_[t] = std::move(linked);
    return s;
}

// Directories count as durable once made: the store makes its one directory before its files.
IOStatus PowerCutFileSystem::CreateDir(const std::string& path, const IOOptions& options,
                                       IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    return target_->CreateDir(path, options, dbg);
}

IOStatus PowerCutFileSystem::CreateDirIfMissing(const std::string& path, const IOOptions& options,
                                                IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    return target_->CreateDirIfMissing(path, options, dbg);
}

IOStatus PowerCutFileSystem::DeleteDir(const std::string& path, const IOOptions& options,
                                       IODebugContext* dbg) {
    Change change(*this);
    if (!change.status().ok()) return change.status();
    return target_->DeleteDir(path, options, dbg);
}

namespace {

// RocksDB waits a second after a failed background flush before it carries on;
// after a simulated cut that second would only slow the rounds down.
constexpr int kLongestSleepMicros = 10'000;

class ShortSleepClock final : public rocksdb::SystemClockWrapper {
  public:
    ShortSleepClock() : SystemClockWrapper(rocksdb::SystemClock::Default()) {}
    const char* Name() const override { return "ShortSleepClock"; }
    void SleepForMicroseconds(int micros) override {
        target_->SleepForMicroseconds(std::min(micros, kLongestSleepMicros));
    }
};

// RocksDB's own threads and the power-cut file system, with short sleeps.
class PowerCutEnvironment final : public rocksdb::EnvWrapper {
  public:
    explicit PowerCutEnvironment(const std::shared_ptr<PowerCutFileSystem>& fs)
        : EnvWrapper(rocksdb::NewCompositeEnv(fs)) {
        file_system_ = fs;
        system_clock_ = std::make_shared<ShortSleepClock>();
    }
    const char* Name() const override { return "PowerCutEnvironment"; }
    void SleepForMicroseconds(int micros) override {
        target()->SleepForMicroseconds(std::min(micros, kLongestSleepMicros));
    }
};

}  // namespace

PowerCutEnv make_power_cut_env() {
    PowerCutEnv out;
    out.fs = std::make_shared<PowerCutFileSystem>();
    out.env = std::make_unique<PowerCutEnvironment>(out.fs);
    return out;
}

}  // namespace assistd::state::test_support
