// A failed fsync (an injected EIO), in both durability modes: the write it
// carried is not acknowledged, every later write is refused with a clear
// error until the store is reopened, reads go on, one error line is logged,
// and after a power cut the store reopens with what was acknowledged.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "power_cut_file_system.h"
#include "state/durable_session_store.h"

namespace assistd::state {
namespace {

using Durability = DurableSessionStoreOptions::Durability;

// Built by appending: GCC 12 warns falsely (-Wrestrict) on "w" + std::to_string(...).
std::string writer_name(int writer) {
    std::string s = "w";
    s += std::to_string(writer);
    return s;
}

size_t count_of(const std::string& haystack, const std::string& needle) {
    size_t n = 0;
    for (size_t at = haystack.find(needle); at != std::string::npos;
         at = haystack.find(needle, at + 1))
        ++n;
    return n;
}

// Sends spdlog's default logger to a string for the test's lifetime.
class CapturedLog {
  public:
    CapturedLog() : previous_(spdlog::default_logger()) {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink));
    }
    ~CapturedLog() { spdlog::set_default_logger(previous_); }
    std::string text() const { return out_.str(); }

  private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> previous_;
};

class SessionWriteFailure : public ::testing::TestWithParam<Durability> {
  protected:
    void SetUp() override {
        dir_ = (std::filesystem::temp_directory_path() /
                ("assistd_write_failure_" + std::to_string(getpid()) + "_" +
                 std::to_string(static_cast<int>(GetParam()))))
                   .string();
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(
            dir_);  // the store makes only its own directory through an env
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<DurableSessionStore> open() {
        DurableSessionStoreOptions o;
        o.path = dir_ + "/db";
        o.replica_id = 3;
        o.durability = GetParam();
        o.env = env_.env.get();
        auto s = DurableSessionStore::open(o, clock_);
        EXPECT_TRUE(s.ok()) << s.error().message;
        return s.ok() ? std::move(s).value() : nullptr;
    }

    std::string dir_;
    ManualClock clock_;
    test_support::PowerCutEnv env_ = test_support::make_power_cut_env();
};

TEST_P(SessionWriteFailure, AFailedFsyncIsNotAcknowledgedAndStopsWritesUntilReopened) {
    CapturedLog log;
    auto store = open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->create("s1", "t", "title").ok());
    ASSERT_TRUE(store->append_message("s1", {"user", "before"}).ok());

    env_.fs->fail_next_syncs(1, ".log");
    auto during = store->append_message("s1", {"user", "during"});
    ASSERT_FALSE(during.ok()) << "a write whose fsync failed was acknowledged";
    EXPECT_EQ(during.error().code, ErrorCode::kIo);
    EXPECT_NE(during.error().message.find("injected EIO"), std::string::npos)
        << during.error().message;
    EXPECT_NE(during.error().message.find("takes no more writes"), std::string::npos)
        << during.error().message;
    EXPECT_EQ(env_.fs->failed_syncs(), 1);

    // Every later write is refused by the store itself, before it reaches the disk.
    const uint64_t changes_before = env_.fs->changes();
    auto after = store->append_message("s1", {"user", "after"});
    ASSERT_FALSE(after.ok());
    EXPECT_EQ(after.error().code, ErrorCode::kIo);
    EXPECT_NE(after.error().message.find("takes no more writes since a write to disk failed"),
              std::string::npos)
        << after.error().message;
    EXPECT_NE(after.error().message.find("injected EIO"), std::string::npos)
        << "the refusal names the cause";
    const Status refused[] = {store->create("s2", "t", "other"), store->remove("s1"),
                              store->update_metadata("s1", "k", "v"), store->add_usage("s1", 1, 2),
                              store->set_summary("s1", "summary")};
    for (const auto& st : refused) {
        ASSERT_FALSE(st.ok());
        EXPECT_NE(st.error().message.find("takes no more writes"), std::string::npos)
            << st.error().message;
    }
    EXPECT_EQ(env_.fs->changes(), changes_before) << "a refused write still touched the disk";
    EXPECT_FALSE(store->deleted("s1")) << "a refused deletion changed the store";
    EXPECT_EQ(store->get("s2").ok(), false) << "a refused create is visible";

    // Reads go on.
    auto read = store->get("s1");
    ASSERT_TRUE(read.ok()) << read.error().message;
    ASSERT_GE(read->messages.size(), 1u);
    EXPECT_EQ(read->messages[0].content, "before");
    EXPECT_EQ(store->list_by_tenant("t"), std::vector<std::string>{"s1"});

    EXPECT_EQ(count_of(log.text(), "takes no more writes until it is reopened"), 1u) << log.text();
    EXPECT_NE(log.text().find("[error]"), std::string::npos) << log.text();

    // The power goes; the reopened store has what was acknowledged and takes writes again.
    env_.fs->cut_power();
    store.reset();
    ASSERT_TRUE(env_.fs->power_on().ok());
    store = open();
    ASSERT_NE(store, nullptr);
    auto back = store->get("s1");
    ASSERT_TRUE(back.ok()) << back.error().message;
    ASSERT_EQ(back->messages.size(), 1u) << "the unacknowledged write's bytes were never durable";
    EXPECT_EQ(back->messages[0].content, "before");
    EXPECT_TRUE(store->append_message("s1", {"user", "after reopening"}).ok());
    EXPECT_TRUE(store->create("s2", "t", "other").ok());
}

TEST_P(SessionWriteFailure, ConcurrentWritersAroundAFailedFsyncAreAllRefusedOnceItFails) {
    auto store = open();
    ASSERT_NE(store, nullptr);
    constexpr int kWriters = 4, kAppends = 50;
    for (int w = 0; w < kWriters; ++w) ASSERT_TRUE(store->create(writer_name(w), "t", "").ok());
    env_.fs->fail_next_syncs(1, ".log");
    std::vector<std::vector<std::string>> acknowledged(kWriters);
    std::vector<std::thread> threads;
    for (int w = 0; w < kWriters; ++w) {
        threads.emplace_back([&, w] {
            for (int i = 0; i < kAppends; ++i) {
                const std::string content = writer_name(w) + "-" + std::to_string(i);
                if (!store->append_message(writer_name(w), {"user", content}).ok()) return;
                acknowledged[static_cast<size_t>(w)].push_back(content);
            }
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(env_.fs->failed_syncs(), 1);
    EXPECT_FALSE(store->append_message("w0", {"user", "late"}).ok());

    env_.fs->cut_power();
    store.reset();
    ASSERT_TRUE(env_.fs->power_on().ok());
    store = open();
    ASSERT_NE(store, nullptr);
    for (int w = 0; w < kWriters; ++w) {
        auto got = store->get(writer_name(w));
        ASSERT_TRUE(got.ok()) << got.error().message;
        const auto& acked = acknowledged[static_cast<size_t>(w)];
        ASSERT_GE(got->messages.size(), acked.size())
            << "writer " << w << ": an acknowledged write was lost";
        for (size_t i = 0; i < acked.size(); ++i) EXPECT_EQ(got->messages[i].content, acked[i]);
    }
}

INSTANTIATE_TEST_SUITE_P(BothModes, SessionWriteFailure,
                         ::testing::Values(Durability::kSyncEachWrite, Durability::kGroupCommit),
                         [](const ::testing::TestParamInfo<Durability>& info) {
                             return info.param == Durability::kSyncEachWrite
                                        ? std::string("SyncEachWrite")
                                        : std::string("GroupCommit");
                         });

}  // namespace
}  // namespace assistd::state
