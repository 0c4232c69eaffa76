// Power-cut rounds, for both durability modes: writers create, append to and
// delete sessions on the power-cut file system; the power goes at a random
// file change; the store reopens on the bytes that survive (sometimes through
// a second cut during the reopen) and every acknowledged write must be there,
// in order, while nothing that was never written appears. Each round is
// seeded: a failing round prints its seed, and ASSISTD_POWERCUT_SEED=<seed>
// replays that round alone (a one-writer round replays exactly).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "power_cut_file_system.h"
#include "state/durable_session_store.h"

namespace assistd::state {
namespace {

using Durability = DurableSessionStoreOptions::Durability;
using test_support::make_power_cut_env;
using test_support::PowerCutEnv;

constexpr int kRoundsPerMode = 50;
constexpr int kCutsPerRound = 3;
constexpr int kMaxOpsPerWriter = 60;                      // per writer, between two cuts
constexpr auto kModeBudget = std::chrono::seconds(15);    // no new round after this
constexpr auto kPhaseDeadline = std::chrono::seconds(5);  // writers stop by then, cut or not
constexpr int kMaxReopens = 4;  // a reopen cut short is retried this often
const std::string kTenant = "tenant";

// What one writer knows of a session: what was acknowledged, and the one
// change whose call failed at the cut (it may or may not have reached the disk).
struct SessionModel {
    std::string id;
    bool created = false;
    bool create_in_doubt = false;
    std::vector<std::string> messages;
    std::optional<std::string> message_in_doubt;
    bool removed = false;
    bool remove_in_doubt = false;
};

struct WriterModel {
    std::vector<SessionModel> sessions;
    uint64_t next_session = 0;
    uint64_t next_message = 0;
    std::string unexpected_failure;  // a write refused while the power was on
};

// Built by appending: GCC 12 warns falsely (-Wrestrict) on "w" + std::to_string(...).
std::string writer_name(int writer) {
    std::string s = "w";
    s += std::to_string(writer);
    return s;
}

std::string message_content(int writer, uint64_t n, std::mt19937_64& rng) {
    std::string s = writer_name(writer) + "-m" + std::to_string(n) + ":";
    const size_t filler = rng() % 600;  // varied record sizes put cuts at varied offsets
    for (size_t i = 0; i < filler; ++i) s.push_back(static_cast<char>('a' + (n + i) % 26));
    return s;
}

// One writer between two cuts: stops at its first failed call (the cut).
void run_writer(DurableSessionStore& store, test_support::PowerCutFileSystem& fs, int writer,
                uint64_t seed, WriterModel& model) {
    std::mt19937_64 rng(seed);
    const auto deadline = std::chrono::steady_clock::now() + kPhaseDeadline;
    for (int op = 0; op < kMaxOpsPerWriter && std::chrono::steady_clock::now() < deadline; ++op) {
        std::vector<size_t> live;
        for (size_t i = 0; i < model.sessions.size(); ++i)
            if (model.sessions[i].created && !model.sessions[i].removed) live.push_back(i);
        const unsigned dice = rng() % 100;
        Status st;
        if (live.empty() || dice < 12) {
            SessionModel s;
            s.id = writer_name(writer) + "-s" + std::to_string(model.next_session++);
            st = store.create(s.id, kTenant, "title of " + s.id);
            (st.ok() ? s.created : s.create_in_doubt) = true;
            model.sessions.push_back(std::move(s));
        } else if (dice < 16) {
            SessionModel& s = model.sessions[live[rng() % live.size()]];
            st = store.remove(s.id);
            (st.ok() ? s.removed : s.remove_in_doubt) = true;
        } else {
            SessionModel& s = model.sessions[live[rng() % live.size()]];
            std::string content = message_content(writer, model.next_message++, rng);
            auto m = store.append_message(s.id, {"user", content});
            if (m.ok()) {
                s.messages.push_back(std::move(content));
            } else {
                s.message_in_doubt = std::move(content);
                st = m.error();
            }
        }
        if (!st.ok()) {
            if (fs.powered()) model.unexpected_failure = st.error().message;
            return;
        }
    }
}

// Checks the reopened store against what was acknowledged, then settles every
// change in doubt by what the store now holds (it is on disk: durable).
// Returns how many acknowledged messages it found.
size_t verify_and_settle(DurableSessionStore& store, std::vector<WriterModel>& writers) {
    std::set<std::string> expected_listed;
    size_t checked = 0;
    for (auto& w : writers) {
        for (auto& s : w.sessions) {
            auto got = store.get(s.id);
            if (s.removed) {
                EXPECT_FALSE(got.ok())
                    << "session " << s.id << ": its acknowledged deletion was lost";
                EXPECT_TRUE(store.deleted(s.id))
                    << "session " << s.id << ": the tombstone was lost";
                continue;
            }
            if (s.remove_in_doubt) {
                if (!got.ok()) {
                    EXPECT_TRUE(store.deleted(s.id))
                        << "session " << s.id << ": gone without a tombstone";
                    s.removed = true;
                    s.remove_in_doubt = false;
                    continue;
                }
                s.remove_in_doubt = false;
            }
            if (s.create_in_doubt) {
                s.create_in_doubt = false;
                s.created = got.ok();
                if (!got.ok()) continue;
            }
            if (!s.created) continue;
            if (!got.ok()) {
                ADD_FAILURE() << "session " << s.id
                              << ": its acknowledged creation was lost: " << got.error().message;
                continue;
            }
            expected_listed.insert(s.id);
            EXPECT_EQ(got->tenant, kTenant) << s.id;
            const auto& found = got->messages;
            const size_t acked = s.messages.size();
            const size_t most = acked + (s.message_in_doubt ? 1 : 0);
            EXPECT_GE(found.size(), acked)
                << "session " << s.id << ": acknowledged messages were lost";
            EXPECT_LE(found.size(), most)
                << "session " << s.id << ": messages appeared that were never written";
            for (size_t i = 0; i < std::min(found.size(), acked); ++i)
                EXPECT_EQ(found[i].content, s.messages[i])
                    << "session " << s.id << " message " << i;
            checked += acked;
            if (found.size() == acked + 1 && s.message_in_doubt) {
                EXPECT_EQ(found[acked].content, *s.message_in_doubt) << "session " << s.id;
                s.messages.push_back(*s.message_in_doubt);
            }
            s.message_in_doubt.reset();
        }
    }
    const auto listed = store.list_by_tenant(kTenant);
    EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), expected_listed)
        << "the tenant's listing is not the sessions that survived";
    return checked;
}

uint64_t round_seed_from_env() {
    const char* v = std::getenv("ASSISTD_POWERCUT_SEED");
    return v && *v ? std::strtoull(v, nullptr, 10) : 0;
}

class SessionPowerCut : public ::testing::Test {
  protected:
    void TearDown() override {
        if (!dir_.empty()) std::filesystem::remove_all(dir_);
    }

    Result<std::unique_ptr<DurableSessionStore>> open(PowerCutEnv& env,
                                                      const DurableSessionStoreOptions& base) {
        DurableSessionStoreOptions o = base;
        o.env = env.env.get();
        return DurableSessionStore::open(o, clock_);
    }

    // Reopens after a cut; with `cut_during_open`, the power goes again
    // part-way through the first attempt (recovery must survive that too).
    std::unique_ptr<DurableSessionStore> reopen(PowerCutEnv& env,
                                                const DurableSessionStoreOptions& o,
                                                std::optional<uint64_t> cut_during_open) {
        for (int attempt = 0; attempt < kMaxReopens; ++attempt) {
            if (attempt == 0 && cut_during_open) env.fs->cut_power_after(*cut_during_open);
            auto store = open(env, o);
            env.fs->cut_power_after(0);
            if (store.ok() && env.fs->powered()) return std::move(store).value();
            ++cuts_during_reopen_;
            EXPECT_TRUE(store.ok() || !env.fs->powered())
                << "reopening with the power on failed: " << store.error().message;
            if (store.ok())
                store.value().reset();  // the cut came after open returned: close on the dead disk
            auto restored = env.fs->power_on();
            EXPECT_TRUE(restored.ok()) << restored.ToString();
        }
        ADD_FAILURE() << "the store did not reopen in " << kMaxReopens << " attempts";
        return nullptr;
    }

    // One round: a fresh store, kCutsPerRound cuts, a check after each reopen.
    void run_round(Durability durability, uint64_t seed, int writers) {
        SCOPED_TRACE("replay with ASSISTD_POWERCUT_SEED=" + std::to_string(seed));
        std::mt19937_64 rng(seed);
        dir_ = (std::filesystem::temp_directory_path() /
                ("assistd_powercut_" + std::to_string(getpid()) + "_" + std::to_string(seed)))
                   .string();
        std::filesystem::remove_all(dir_);
        std::filesystem::create_directories(
            dir_);  // the store makes only its own directory through an env
        PowerCutEnv env = make_power_cut_env();
        DurableSessionStoreOptions o;
        o.path = dir_ + "/db";
        o.replica_id = 7;
        o.durability = durability;
        const int snapshot_choices[] = {2, 8, 64};
        o.snapshot_every = snapshot_choices[rng() % 3];
        // Half the rounds with a cache of a few documents: sessions are read back from disk
        // mid-round, between writes still waiting for their fsync.
        if (rng() % 2) o.cache_bytes = 8 << 10;

        auto opened = open(env, o);
        ASSERT_TRUE(opened.ok()) << opened.error().message;
        std::unique_ptr<DurableSessionStore> store = std::move(opened).value();
        std::vector<WriterModel> models(static_cast<size_t>(writers));
        // About two file changes per write (append, sync) and some for deletions' flushes.
        const uint64_t changes_per_phase =
            static_cast<uint64_t>(writers) * kMaxOpsPerWriter * 5 / 2;
        for (int cut = 0; cut < kCutsPerRound; ++cut) {
            env.fs->cut_power_after(1 + rng() % changes_per_phase);
            std::vector<std::thread> threads;
            for (int w = 0; w < writers; ++w) {
                threads.emplace_back(run_writer, std::ref(*store), std::ref(*env.fs), w, rng(),
                                     std::ref(models[static_cast<size_t>(w)]));
            }
            for (auto& t : threads) t.join();
            for (const auto& m : models)
                EXPECT_EQ(m.unexpected_failure, "")
                    << "a write failed with the power on (cut " << cut << ")";
            env.fs->cut_power_after(0);
            if (env.fs->powered())
                env.fs->cut_power();  // the writers ran out before the scheduled cut
            else
                ++cuts_during_writes_;
            const std::string losses = env.fs->describe_pending_losses();
            store.reset();  // the dying process's store, closed on the dead disk
            auto restored = env.fs->power_on();
            ASSERT_TRUE(restored.ok()) << restored.ToString();
            std::optional<uint64_t> cut_during_open;
            if (rng() % 4 == 0) cut_during_open = 1 + rng() % 40;
            store = reopen(env, o, cut_during_open);
            ASSERT_NE(store, nullptr);
            messages_checked_ += verify_and_settle(*store, models);
            ASSERT_FALSE(HasFailure()) << "after cut " << cut << "; what the cut dropped:\n"
                                       << losses;
        }
        // The store that came back from the last cut takes writes too.
        ASSERT_TRUE(store->create("after-the-cuts", kTenant, "").ok());
        EXPECT_TRUE(store->append_message("after-the-cuts", {"user", "still writable"}).ok());
        store.reset();
        std::filesystem::remove_all(dir_);
        dir_.clear();
    }

    void run_mode(Durability durability, uint64_t mode_salt, int max_writers) {
        const uint64_t replay = round_seed_from_env();
        if (replay != 0) {
            run_round(durability, replay, replay % 2 == 0 ? 1 : max_writers);
            return;
        }
        const uint64_t base = (std::random_device{}() ^ mode_salt) & 0xFFFFFFFFull;
        const auto start = std::chrono::steady_clock::now();
        int rounds = 0;
        for (; rounds < kRoundsPerMode && std::chrono::steady_clock::now() - start < kModeBudget;
             ++rounds) {
            // Even seeds run one writer (an exact replay), odd ones several; never 0 (no replay).
            const uint64_t seed =
                ((base + static_cast<uint64_t>(rounds)) << 1 | static_cast<uint64_t>(rounds & 1)) +
                (1ull << 40);
            run_round(durability, seed, seed % 2 == 0 ? 1 : max_writers);
            if (HasFailure()) return;
        }
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
        std::printf(
            "%d rounds, %d power cuts (%d amid writes, the rest after them; %d more amid a "
            "reopen), "
            "%zu acknowledged messages checked, %lld ms\n",
            rounds, rounds * kCutsPerRound, cuts_during_writes_, cuts_during_reopen_,
            messages_checked_, static_cast<long long>(ms));
        EXPECT_GE(rounds, kRoundsPerMode / 4)
            << "too few rounds ran inside the time budget to mean much";
    }

    ManualClock clock_;
    std::string dir_;
    size_t messages_checked_ = 0;
    int cuts_during_writes_ = 0;
    int cuts_during_reopen_ = 0;
};

TEST_F(SessionPowerCut, SyncEachWriteKeepsEveryAcknowledgedWrite) {
    run_mode(Durability::kSyncEachWrite, 0x5EC0, 2);
}

TEST_F(SessionPowerCut, GroupCommitKeepsEveryAcknowledgedWrite) {
    run_mode(Durability::kGroupCommit, 0x6C0A, 3);
}

}  // namespace
}  // namespace assistd::state
