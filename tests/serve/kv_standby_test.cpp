// Standby KV (kv_standby.h): a session's KV shipped after each turn to
// another node's store is imported there by the session's next turn, with
// answers identical to computed ones; turns ship only what the copy lacks; a
// lost run leaves a shorter chain, never a wrong one; damaged and foreign
// runs are refused; the byte budget holds.
#include "serve/kv_standby.h"
#include "serve/kv_standby_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/engine.h"
#include "engine/random_model.h"
#include "serve/prefix_cache.h"

namespace assistd::serve {
namespace {

namespace fs = std::filesystem;
using engine::Model;
using engine::TokenId;

class KvStandbyTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("assistd-kvstandby-" + std::to_string(::getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        model_path_ = write_model("m.gguf", 5);
        sender_ = load(model_path_);
        receiver_ = load(model_path_);
        ASSERT_TRUE(sender_ && receiver_);
        ASSERT_EQ(sender_->kv_fingerprint(), receiver_->kv_fingerprint());
    }
    void TearDown() override {
        sender_.reset();
        receiver_.reset();
        fs::remove_all(dir_);
    }
    std::string write_model(const std::string& name, uint64_t seed) {
        auto spec = engine::random_model_shape("tiny-llama");
        spec->seed = seed;
        const std::string path = (dir_ / name).string();
        EXPECT_TRUE(engine::write_random_model(*spec, path).ok());
        return path;
    }
    static std::unique_ptr<Model> load(const std::string& path) {
        engine::ModelParams p;
        p.path = path;
        p.n_threads = 1;
        p.max_sequences = 4;
        p.kv_cache_tokens = 4096;
        auto m = Model::load(p);
        EXPECT_TRUE(m.ok());
        return m.ok() ? std::move(m.value()) : nullptr;
    }
    std::vector<TokenId> tokens(size_t n, uint32_t seed) const {
        std::mt19937 rng(seed);
        std::vector<TokenId> t(n);
        for (auto& x : t) x = static_cast<TokenId>(3 + rng() % (sender_->info().n_vocab - 3));
        return t;
    }
    static std::vector<TokenId> concat(std::vector<TokenId> a, const std::vector<TokenId>& b) {
        a.insert(a.end(), b.begin(), b.end());
        return a;
    }
    // Feeds t[from..] to `seq` and answers `n` greedy tokens after it.
    static std::vector<TokenId> answer(Model& m, engine::SequenceId seq, const std::vector<TokenId>& t, size_t from,
                                       size_t n) {
        std::vector<float> logits;
        for (size_t at = from; at < t.size(); at += 64) {
            const engine::BatchEntry e{
                seq, std::span<const TokenId>(t).subspan(at, std::min<size_t>(64, t.size() - at)), false};
            auto l = m.decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32);
            EXPECT_TRUE(l.ok());
            logits.assign(l->begin(), l->end());
        }
        std::vector<TokenId> out;
        for (size_t i = 0; i < n; ++i) {
            out.push_back(static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
            const engine::BatchEntry e{seq, std::span<const TokenId>(&out.back(), 1), false};
            auto l = m.decode(std::span<const engine::BatchEntry>(&e, 1), engine::Precision::kFP32);
            EXPECT_TRUE(l.ok());
            logits.assign(l->begin(), l->end());
        }
        return out;
    }
    // A finished turn of `key` on the sender: its sequence holds `history`,
    // the shipper sends what the standby copy lacks, the cache keeps it.
    void sender_turn(PrefixCache& cache, KvStandbyShipper& shipper, const std::string& key,
                     const std::vector<TokenId>& history) {
        auto a = cache.acquire(history, key);
        ASSERT_TRUE(a.ok());
        answer(*sender_, a->seq, history, a->reused, 0);
        ASSERT_EQ(sender_->sequence_length(a->seq), history.size());
        const engine::SequenceId seq = a->seq;
        shipper.turn_finished(key, history, [&](size_t begin, size_t end) {
            return sender_->export_kv(seq, begin, end, std::span(history).subspan(begin, end - begin));
        });
        cache.retain(seq, history);
    }
    // The greedy answer the receiver computes for `prompt` with nothing reused.
    std::vector<TokenId> computed_answer(const std::vector<TokenId>& prompt, size_t n) {
        auto fresh = receiver_->create_sequence();
        EXPECT_TRUE(fresh.ok());
        auto out = answer(*receiver_, *fresh, prompt, 0, n);
        receiver_->free_sequence(*fresh);
        return out;
    }

    fs::path dir_;
    std::string model_path_;
    std::unique_ptr<Model> sender_, receiver_;
};

// The shipper delivers to `store` unless the test drops runs.
struct Wire {
    KvStandbyStore* store = nullptr;
    std::vector<std::string> sent{};
    size_t drop_run = static_cast<size_t>(-1);  // this run (0-based, over the whole test) is lost on the way
    bool refuse = false;                        // the link refuses (over budget)
    bool own = false;                           // the node's own runs (keep_own), not a peer's
    std::vector<KvStandbyShipper::Send> send() {
        return {one()};
    }
    KvStandbyShipper::Send one() {
        return [this](std::string_view key, uint64_t prefix_hash, std::string_view blob) {
            if (refuse) return KvSendResult::kDropped;
            std::string payload = encode_kv_run(key, prefix_hash, blob);
            const size_t n = sent.size();
            sent.push_back(payload);
            if (n != drop_run && store)
                (void)(own ? store->keep_own(key, prefix_hash, std::string(blob)) : store->receive(payload));
            return KvSendResult::kSent;
        };
    }
};

TEST_F(KvStandbyTest, AFailoverTurnImportsThePeersKvAndAnswersAsComputed) {
    KvStandbyStore store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire wire{&store};
    KvStandbyShipper shipper({.run_tokens = 100}, wire.send());
    PrefixCache sender_cache(*sender_, {256, 16});
    const auto history = tokens(300, 1);
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "acme:s1", history));
    EXPECT_EQ(wire.sent.size(), 3u) << "300 positions in runs of 100";
    EXPECT_EQ(shipper.stats().tokens, 300u);
    EXPECT_EQ(store.stats().sessions, 1u);
    const auto& info = receiver_->info();
    EXPECT_GT(store.stats().bytes, 300u * 2 * info.n_layer * info.n_head_kv * info.head_dim * 2)
        << "the K and V (f16) of 300 positions";

    // The sender is gone; the next turn lands on the receiver.
    const auto next = concat(history, tokens(20, 2));
    PrefixCache cache(*receiver_, {256, 16, nullptr, &store});
    auto other = cache.acquire(next, "acme:s2");
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(other->reused, 0u) << "another session's key finds nothing";
    receiver_->free_sequence(other->seq);
    auto a = cache.acquire(next, "acme:s1");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, history.size()) << "the history came from the standby copy, not from a prefill";
    EXPECT_EQ(cache.stats().standby_hits, 1u);
    EXPECT_EQ(cache.stats().standby_tokens, history.size());
    const auto imported = answer(*receiver_, a->seq, next, a->reused, 16);
    receiver_->free_sequence(a->seq);
    EXPECT_EQ(store.stats().sessions, 0u) << "taken: the receiver's RAM holds it now";
    EXPECT_EQ(store.stats().bytes, 0u);
    EXPECT_EQ(imported, computed_answer(next, 16)) << "imported KV must answer as computed KV does";
}

TEST_F(KvStandbyTest, LaterTurnsShipOnlyWhatTheCopyLacksAndARetokenizedTailIsReplaced) {
    KvStandbyStore store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire wire{&store};
    KvStandbyShipper shipper({.run_tokens = 64}, wire.send());
    PrefixCache sender_cache(*sender_, {512, 16});
    const auto turn1 = tokens(300, 1);
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn1));
    ASSERT_EQ(shipper.stats().tokens, 300u);

    // Turn 2 continues turn 1 exactly: only its 50 new positions travel.
    const auto turn2 = concat(turn1, tokens(50, 2));
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn2));
    EXPECT_EQ(shipper.stats().tokens, 350u);
    EXPECT_EQ(shipper.shipped(0, "k", turn2), 350u);

    // Turn 3 re-renders turn 2's last 10 tokens differently (a template's end
    // of turn): the copy is cut back to the last checkpoint both agree on (320)
    // and gets the rest again.
    auto turn3 = std::vector<TokenId>(turn2.begin(), turn2.end() - 10);
    turn3 = concat(turn3, tokens(40, 3));
    ASSERT_EQ(shipper.shipped(0, "k", turn3), 320u);
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn3));
    EXPECT_EQ(shipper.stats().tokens, 350u + (turn3.size() - 320));

    const auto next = concat(turn3, tokens(8, 4));
    PrefixCache cache(*receiver_, {512, 16, nullptr, &store});
    auto a = cache.acquire(next, "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, turn3.size()) << "the chain holds turn 3 exactly, not turn 2's tail";
    const auto imported = answer(*receiver_, a->seq, next, a->reused, 12);
    receiver_->free_sequence(a->seq);
    EXPECT_EQ(imported, computed_answer(next, 12));
}

TEST_F(KvStandbyTest, ALostRunLeavesAShorterChainNeverAWrongOne) {
    KvStandbyStore store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire wire{&store};
    wire.drop_run = 2;  // turn 1 ships runs 0-1 (positions 0-199); turn 2's first run is lost
    KvStandbyShipper shipper({.run_tokens = 100}, wire.send());
    PrefixCache sender_cache(*sender_, {512, 16});
    const auto turn1 = tokens(200, 1);
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn1));
    const auto turn2 = concat(turn1, tokens(150, 2));
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn2));
    EXPECT_EQ(wire.sent.size(), 4u);
    EXPECT_EQ(store.stats().gaps, 1u) << "the run after the lost one continues a prefix the receiver lacks";

    const auto next = concat(turn2, tokens(8, 3));
    PrefixCache cache(*receiver_, {512, 16, nullptr, &store});
    auto a = cache.acquire(next, "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, 200u) << "what arrived before the loss is used; the rest is prefilled";
    const auto imported = answer(*receiver_, a->seq, next, a->reused, 12);
    receiver_->free_sequence(a->seq);
    EXPECT_EQ(imported, computed_answer(next, 12));
}

TEST_F(KvStandbyTest, ARefusedSendMakesTheNextTurnShipEverythingAgain) {
    KvStandbyStore store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire wire{&store};
    KvStandbyShipper shipper({.run_tokens = 100}, wire.send());
    PrefixCache sender_cache(*sender_, {512, 16});
    const auto turn1 = tokens(200, 1);
    wire.refuse = true;  // the peer's queue is over budget
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn1));
    EXPECT_EQ(shipper.stats().dropped, 1u);
    EXPECT_EQ(shipper.shipped(0, "k", turn1), 0u);
    wire.refuse = false;
    const uint64_t before = shipper.stats().tokens;
    const auto turn2 = concat(turn1, tokens(30, 2));
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", turn2));
    EXPECT_EQ(shipper.stats().tokens - before, 230u) << "the whole conversation, from position 0";
    PrefixCache cache(*receiver_, {512, 16, nullptr, &store});
    auto a = cache.acquire(concat(turn2, {9}), "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, turn2.size());
    receiver_->free_sequence(a->seq);
}

// Destinations are independent: the peers' link over budget (or with no live
// replica) never stops the node's own copy, and each resumes from its own mark.
TEST_F(KvStandbyTest, OneDestinationFailingNeverStopsAnother) {
    KvStandbyStore peers_store({64u << 20, 16}, receiver_->kv_fingerprint());
    KvStandbyStore own_store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire peers{&peers_store};
    Wire own{&own_store};
    own.own = true;
    KvSendResult peers_answer = KvSendResult::kNoTarget;
    std::vector<KvStandbyShipper::Send> destinations{
        [&](std::string_view key, uint64_t hash, std::string_view blob) {
            if (peers_answer != KvSendResult::kSent) return peers_answer;
            return peers.one()(key, hash, blob);
        },
        own.one()};
    KvStandbyShipper shipper({.run_tokens = 64}, std::move(destinations));
    PrefixCache cache(*sender_, {512, 16});
    const auto turn1 = tokens(200, 1);
    ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "k", turn1));  // no live replica
    EXPECT_EQ(shipper.shipped(0, "k", turn1), 0u);
    EXPECT_EQ(shipper.shipped(1, "k", turn1), 200u) << "the disk's copy went on";
    EXPECT_EQ(shipper.stats().dropped, 0u) << "no replica is not a loss";
    const auto turn2 = concat(turn1, tokens(40, 2));
    peers_answer = KvSendResult::kDropped;
    ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "k", turn2));
    EXPECT_EQ(shipper.stats().dropped, 1u);
    EXPECT_EQ(shipper.shipped(1, "k", turn2), 240u);
    EXPECT_EQ(own_store.stats().own_runs, 5u) << "4 runs of turn 1, 1 of turn 2: only what it lacked";
    peers_answer = KvSendResult::kSent;
    const auto turn3 = concat(turn2, tokens(20, 3));
    ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "k", turn3));
    EXPECT_EQ(shipper.shipped(0, "k", turn3), 260u) << "the peers got everything from position 0";
    // Exported once from position 0 for the peers: the disk takes the runs from
    // the one holding its mark (240) on, [192, 256) and [256, 260).
    EXPECT_EQ(own_store.stats().own_runs, 7u);
    PrefixCache receiver(*receiver_, {512, 16, nullptr, &peers_store});
    auto a = receiver.acquire(concat(turn3, {5}), "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, turn3.size());
    receiver_->free_sequence(a->seq);
}

TEST_F(KvStandbyTest, DamagedForeignAndMalformedRunsAreRefused) {
    KvStandbyStore store({64u << 20, 16}, receiver_->kv_fingerprint());
    Wire wire{nullptr};
    KvStandbyShipper shipper({.run_tokens = 400}, wire.send());
    PrefixCache sender_cache(*sender_, {512, 16});
    const auto history = tokens(120, 1);
    ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "k", history));
    ASSERT_EQ(wire.sent.size(), 1u);
    const std::string good = wire.sent[0];

    std::string flipped = good;
    flipped[flipped.size() / 2] ^= 0x40;
    EXPECT_FALSE(store.receive(flipped).ok()) << "a flipped bit";
    EXPECT_FALSE(store.receive(good.substr(0, good.size() - 100)).ok()) << "truncated";
    EXPECT_FALSE(store.receive(good + "xx").ok()) << "padded";
    std::string magic = good;
    magic[3] = '2';
    EXPECT_FALSE(store.receive(magic).ok()) << "wrong magic";
    EXPECT_FALSE(store.receive(good.substr(0, 14)).ok()) << "cut in the header";
    std::string long_key = good;
    long_key[12] = '\xff';
    long_key[13] = '\xff';
    EXPECT_FALSE(store.receive(long_key).ok()) << "a key length past the end";
    EXPECT_FALSE(store.receive("").ok());

    // Another model's KV (other weights, same shape) is never taken.
    auto other = load(write_model("other.gguf", 99));
    ASSERT_TRUE(other);
    KvStandbyStore foreign({64u << 20, 16}, other->kv_fingerprint());
    EXPECT_FALSE(foreign.receive(good).ok());
    EXPECT_EQ(foreign.stats().sessions, 0u);

    EXPECT_EQ(store.stats().refused, 7u);
    EXPECT_EQ(store.stats().sessions, 0u) << "nothing refused was kept";
    ASSERT_TRUE(store.receive(good).ok());
    EXPECT_EQ(store.stats().sessions, 1u);

    // A chain whose tokens are not the prompt's prefix is not used.
    PrefixCache cache(*receiver_, {512, 16, nullptr, &store});
    auto a = cache.acquire(tokens(130, 7), "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, 0u);
    receiver_->free_sequence(a->seq);
}

// Appended, not "s" + to_string: g++ 12's -Wrestrict misfires on operator+ here.
std::string session_name(uint32_t k) {
    std::string s = "s";
    s += std::to_string(k);
    return s;
}

TEST_F(KvStandbyTest, TheByteBudgetDropsTheSessionsUpdatedLongestAgo) {
    uint64_t one = 0;
    {
        KvStandbyStore probe({64u << 20, 16}, receiver_->kv_fingerprint());
        Wire wire{&probe};
        KvStandbyShipper shipper({.run_tokens = 400}, wire.send());
        PrefixCache sender_cache(*sender_, {512, 16});
        ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, "probe", tokens(100, 50)));
        one = probe.stats().bytes;
        ASSERT_GT(one, 0u);
    }
    KvStandbyStore store({one * 2 + one / 2, 16}, receiver_->kv_fingerprint());
    Wire wire{&store};
    KvStandbyShipper shipper({.run_tokens = 400}, wire.send());
    PrefixCache sender_cache(*sender_, {4096, 16});
    for (uint32_t k = 0; k < 4; ++k)
        ASSERT_NO_FATAL_FAILURE(sender_turn(sender_cache, shipper, session_name(k), tokens(100, 20 + k)));
    EXPECT_EQ(store.stats().sessions, 2u);
    EXPECT_LE(store.stats().bytes, one * 2 + one / 2);
    EXPECT_EQ(store.stats().evictions, 2u);
    PrefixCache cache(*receiver_, {512, 16, nullptr, &store});
    for (uint32_t k = 0; k < 4; ++k) {
        auto a = cache.acquire(concat(tokens(100, 20 + k), {5}), session_name(k));
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(a->reused, k >= 2 ? 100u : 0u) << k;
        receiver_->free_sequence(a->seq);
    }
}

// With a directory, runs live in files: a node restarted over it (after a
// SIGKILL: nothing drained) finds its sessions' KV; damaged files are refused.
TEST_F(KvStandbyTest, ARestartedNodeFindsItsSessionsKvInItsDirectory) {
    KvStandbyStoreConfig config{64u << 20, 16, (dir_ / "sessions").string()};
    const auto turn1 = tokens(300, 1);
    const auto turn2 = concat(turn1, tokens(40, 2));
    {
        auto store = KvStandbyStore::open(config, sender_->kv_fingerprint());
        ASSERT_TRUE(store.ok()) << store.error().message;
        Wire wire{store->get()};
        wire.own = true;  // a node's write-through of its own sessions
        KvStandbyShipper shipper({.run_tokens = 128}, wire.send());
        PrefixCache cache(*sender_, {512, 16, nullptr, store->get()});
        ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "k", turn1));
        ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "k", turn2));
        ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "other", tokens(100, 9)));
        EXPECT_EQ(cache.stats().standby_hits, 0u) << "RAM held it: the node's own copy was not taken";
        (*store)->flush();
        EXPECT_EQ((*store)->stats().writes, 5u) << "3 + 1 runs of k, 1 of other";
        // A crash: the model and the cache go without a drain (nothing leaves RAM for disk).
    }
    size_t files = 0;
    for (const auto& f : fs::directory_iterator(dir_ / "sessions")) files += f.path().extension() == ".kvr";
    EXPECT_EQ(files, 5u);

    auto store = KvStandbyStore::open(config, receiver_->kv_fingerprint());
    ASSERT_TRUE(store.ok());
    EXPECT_EQ((*store)->stats().sessions, 2u);
    EXPECT_EQ((*store)->stats().refused, 0u);
    const auto next = concat(turn2, tokens(8, 3));
    PrefixCache cache(*receiver_, {512, 16, nullptr, store->get()});
    auto a = cache.acquire(next, "k");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->reused, turn2.size()) << "the whole history came back from the directory";
    const auto imported = answer(*receiver_, a->seq, next, a->reused, 12);
    receiver_->free_sequence(a->seq);
    EXPECT_EQ(imported, computed_answer(next, 12));
    files = 0;
    for (const auto& f : fs::directory_iterator(dir_ / "sessions")) files += f.path().extension() == ".kvr";
    EXPECT_EQ(files, 1u) << "taken runs leave the disk: RAM holds them now";

    // A damaged file: refused at use, the prompt is prefilled, the file goes.
    for (const auto& f : fs::directory_iterator(dir_ / "sessions")) {
        std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(static_cast<std::streamoff>(fs::file_size(f.path()) / 2));
        io.put('\x5a');
    }
    auto b = cache.acquire(concat(tokens(100, 9), {4}), "other");
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(b->reused, 0u);
    EXPECT_EQ(cache.stats().standby_refused, 1u);
    receiver_->free_sequence(b->seq);
    EXPECT_TRUE(fs::is_empty(dir_ / "sessions"));
}

TEST_F(KvStandbyTest, UnreadableFilesInTheDirectoryAreRemovedAtOpen) {
    const fs::path d = dir_ / "sessions";
    fs::create_directories(d);
    {
        std::ofstream(d / "0000000000000001-00000001.kvr") << "garbage";
        std::ofstream(d / "0000000000000001-00000002.kvr") << std::string("KVR1") + std::string(20, '\0');
        std::ofstream(d / "0000000000000001-00000003.kvr.tmp") << "a write a crash cut short";
    }
    auto store = KvStandbyStore::open({1u << 20, 16, d.string()}, receiver_->kv_fingerprint());
    ASSERT_TRUE(store.ok());
    EXPECT_EQ((*store)->stats().sessions, 0u);
    EXPECT_EQ((*store)->stats().refused, 2u);
    EXPECT_TRUE(fs::is_empty(d));
    auto bad = KvStandbyStore::open({1u << 20, 16, "/proc/assistd-cannot-be-here"}, receiver_->kv_fingerprint());
    EXPECT_FALSE(bad.ok());
}

TEST_F(KvStandbyTest, OnDiskTheBudgetRemovesTheFilesOfTheSessionsUpdatedLongestAgo) {
    KvStandbyStoreConfig config{64u << 20, 16, (dir_ / "sessions").string()};
    uint64_t one = 0;
    {
        auto probe = KvStandbyStore::open(config, sender_->kv_fingerprint());
        ASSERT_TRUE(probe.ok());
        Wire wire{probe->get()};
        KvStandbyShipper shipper({.run_tokens = 400}, wire.send());
        PrefixCache cache(*sender_, {512, 16});
        ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, "probe", tokens(100, 50)));
        one = (*probe)->stats().bytes;
    }
    fs::remove_all(dir_ / "sessions");
    config.max_bytes = one * 2 + one / 2;
    auto store = KvStandbyStore::open(config, sender_->kv_fingerprint());
    ASSERT_TRUE(store.ok());
    Wire wire{store->get()};
    KvStandbyShipper shipper({.run_tokens = 400}, wire.send());
    PrefixCache cache(*sender_, {4096, 16});
    for (uint32_t k = 0; k < 4; ++k)
        ASSERT_NO_FATAL_FAILURE(sender_turn(cache, shipper, session_name(k), tokens(100, 20 + k)));
    (*store)->flush();
    EXPECT_EQ((*store)->stats().sessions, 2u);
    EXPECT_EQ((*store)->stats().evictions, 2u);
    size_t files = 0;
    for (const auto& f : fs::directory_iterator(dir_ / "sessions")) files += f.path().extension() == ".kvr";
    EXPECT_EQ(files, 2u);
}

TEST(KvStandbyHash, ExtendsAndTellsSequencesApart) {
    const std::vector<TokenId> a{1, 2, 3, 4, 5};
    EXPECT_EQ(token_hash(a), token_hash(std::span(a).subspan(2), token_hash(std::span(a).first(2))));
    EXPECT_NE(token_hash(a), token_hash(std::vector<TokenId>{1, 2, 3, 5, 4}));
    EXPECT_NE(token_hash(std::vector<TokenId>{}), token_hash(std::vector<TokenId>{0}));
}

}  // namespace
}  // namespace assistd::serve
