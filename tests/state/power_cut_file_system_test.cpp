// The power-cut file system's model: what survives a cut is exactly what a
// file sync and a directory sync made durable; changes after the cut fail;
// an injected EIO fails the sync and its bytes never become durable.
#include "power_cut_file_system.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace assistd::state::test_support {
namespace {

using rocksdb::IOOptions;

class PowerCutFileSystemTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = (std::filesystem::temp_directory_path() /
                ("assistd_powercut_fs_" + std::to_string(getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                   .string();
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<rocksdb::FSWritableFile> create(const std::string& name) {
        std::unique_ptr<rocksdb::FSWritableFile> f;
        EXPECT_TRUE(
            fs_.NewWritableFile(dir_ + "/" + name, rocksdb::FileOptions(), &f, nullptr).ok());
        return f;
    }
    void sync_directory() {
        std::unique_ptr<rocksdb::FSDirectory> d;
        ASSERT_TRUE(fs_.NewDirectory(dir_, IOOptions(), &d, nullptr).ok());
        ASSERT_TRUE(d->Fsync(IOOptions(), nullptr).ok());
    }
    // The file's bytes on disk; nullopt when it does not exist.
    std::optional<std::string> content(const std::string& name) const {
        std::ifstream in(dir_ + "/" + name, std::ios::binary);
        if (!in) return std::nullopt;
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    void cut_and_restore() {
        fs_.cut_power();
        const auto restored = fs_.power_on();
        ASSERT_TRUE(restored.ok()) << restored.ToString();
    }

    std::string dir_;
    PowerCutFileSystem fs_;
};

TEST_F(PowerCutFileSystemTest, KeepsSyncedBytesAndDropsTheRest) {
    auto f = create("wal");
    sync_directory();
    ASSERT_TRUE(f->Append("synced|", IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Append("lost", IOOptions(), nullptr).ok());
    EXPECT_EQ(content("wal"), "synced|lost");  // before the cut the page cache has it all
    f.reset();
    cut_and_restore();
    EXPECT_EQ(content("wal"), "synced|");
}

TEST_F(PowerCutFileSystemTest, AFileWhoseNameWasNeverSyncedDisappears) {
    auto unnamed = create("unnamed");
    ASSERT_TRUE(unnamed->Append("data", IOOptions(), nullptr).ok());
    ASSERT_TRUE(unnamed->Fsync(IOOptions(), nullptr).ok());
    unnamed.reset();
    cut_and_restore();
    EXPECT_EQ(content("unnamed"), std::nullopt)
        << "its data was synced, its directory entry never was";

    auto named = create("named");
    ASSERT_TRUE(named->Append("data", IOOptions(), nullptr).ok());
    ASSERT_TRUE(named->Fsync(IOOptions(), nullptr).ok());
    sync_directory();
    named.reset();
    cut_and_restore();
    EXPECT_EQ(content("named"), "data");
}

TEST_F(PowerCutFileSystemTest, ARenameNotMadeDurableBringsBackWhatTheNameHeld) {
    std::ofstream(dir_ + "/CURRENT") << "old";  // on disk before tracking began: durable
    auto tmp = create("CURRENT.tmp");
    ASSERT_TRUE(tmp->Append("new", IOOptions(), nullptr).ok());
    ASSERT_TRUE(tmp->Sync(IOOptions(), nullptr).ok());
    tmp.reset();
    ASSERT_TRUE(
        fs_.RenameFile(dir_ + "/CURRENT.tmp", dir_ + "/CURRENT", IOOptions(), nullptr).ok());
    EXPECT_EQ(content("CURRENT"), "new");
    cut_and_restore();
    EXPECT_EQ(content("CURRENT"), "old");

    tmp = create("CURRENT.tmp");
    ASSERT_TRUE(tmp->Append("new", IOOptions(), nullptr).ok());
    ASSERT_TRUE(tmp->Sync(IOOptions(), nullptr).ok());
    tmp.reset();
    ASSERT_TRUE(
        fs_.RenameFile(dir_ + "/CURRENT.tmp", dir_ + "/CURRENT", IOOptions(), nullptr).ok());
    sync_directory();
    cut_and_restore();
    EXPECT_EQ(content("CURRENT"), "new");
}

TEST_F(PowerCutFileSystemTest, AScheduledCutHappensInsideTheNthChangeAndLaterChangesFail) {
    auto f = create("wal");
    sync_directory();
    fs_.cut_power_after(3);
    EXPECT_TRUE(f->Append("1", IOOptions(), nullptr).ok());
    EXPECT_TRUE(f->Sync(IOOptions(), nullptr).ok());
    EXPECT_TRUE(fs_.powered());
    EXPECT_FALSE(f->Append("2", IOOptions(), nullptr).ok()) << "the third change meets the cut";
    EXPECT_FALSE(fs_.powered());
    EXPECT_FALSE(f->Sync(IOOptions(), nullptr).ok());
    std::unique_ptr<rocksdb::FSWritableFile> other;
    EXPECT_FALSE(
        fs_.NewWritableFile(dir_ + "/other", rocksdb::FileOptions(), &other, nullptr).ok());
    f.reset();
    ASSERT_TRUE(fs_.power_on().ok());
    EXPECT_EQ(content("wal"), "1");
    EXPECT_EQ(content("other"), std::nullopt);
    auto again = create("wal2");
    EXPECT_TRUE(again->Append("x", IOOptions(), nullptr).ok())
        << "changes are taken again after power_on";
}

TEST_F(PowerCutFileSystemTest, AnInjectedEioFailsTheSyncAndItsBytesNeverBecomeDurable) {
    auto f = create("000001.log");
    sync_directory();
    ASSERT_TRUE(f->Append("durable|", IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Sync(IOOptions(), nullptr).ok());
    fs_.fail_next_syncs(1, ".log");
    ASSERT_TRUE(f->Append("dropped-by-the-kernel|", IOOptions(), nullptr).ok());
    const auto failed = f->Sync(IOOptions(), nullptr);
    EXPECT_TRUE(failed.IsIOError()) << failed.ToString();
    EXPECT_EQ(fs_.failed_syncs(), 1);
    ASSERT_TRUE(f->Append("after", IOOptions(), nullptr).ok());
    EXPECT_TRUE(f->Sync(IOOptions(), nullptr).ok()) << "only the next sync fails";
    f.reset();
    EXPECT_NE(fs_.describe_pending_losses().find("a sync failed"), std::string::npos);
    cut_and_restore();
    EXPECT_EQ(content("000001.log"), "durable|")
        << "a later sync does not bring back what a failed one lost";
}

}  // namespace
}  // namespace assistd::state::test_support
