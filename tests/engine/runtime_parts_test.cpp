// Thread pool, KV cache, sampler and stop strings: the engine's moving parts
// that the forward pass relies on.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <cmath>
#include <map>
#include <numeric>

#include "engine/engine.h"
#include "engine/kv_cache.h"
#include "engine/thread_pool.h"

namespace assistd::engine {
namespace {

TEST(ThreadPool, EveryThreadRunsEveryPhaseInOrder) {
    ThreadPool pool(3);
    std::vector<int> phase_marks(3 * 100, -1);
    std::atomic<int> counter{0};
    pool.run([&](int ith, int nth) {
        EXPECT_EQ(nth, 3);
        for (int phase = 0; phase < 100; ++phase) {
            phase_marks[phase * 3 + ith] = counter.fetch_add(1);
            pool.barrier();
        }
    });
    // Every mark of phase p precedes every mark of phase p+1.
    for (int p = 0; p + 1 < 100; ++p) {
        int max_p = 0, min_next = 1 << 30;
        for (int i = 0; i < 3; ++i) {
            max_p = std::max(max_p, phase_marks[p * 3 + i]);
            min_next = std::min(min_next, phase_marks[(p + 1) * 3 + i]);
        }
        EXPECT_LT(max_p, min_next) << "phase " << p;
    }
}

TEST(ThreadPool, RunsManyJobsBackToBack) {
    ThreadPool pool(2);
    std::atomic<long> sum{0};
    for (int j = 0; j < 2000; ++j) pool.run([&](int ith, int) { sum += ith + 1; });
    EXPECT_EQ(sum.load(), 2000 * 3);
}

TEST(ThreadPool, SplitCoversRangeWithAlignment) {
    for (size_t n : {0u, 1u, 15u, 16u, 17u, 100u, 1536u}) {
        for (int nth : {1, 2, 3, 7}) {
            size_t covered = 0, prev_end = 0;
            for (int i = 0; i < nth; ++i) {
                size_t b, e;
                ThreadPool::split(n, 16, i, nth, b, e);
                EXPECT_EQ(b, prev_end);
                if (e < n) {
                    EXPECT_EQ(e % 16, 0u);
                }
                covered += e - b;
                prev_end = e;
            }
            EXPECT_EQ(covered, n);
        }
    }
}

// Which thread ran each unit, and in what order each thread ran its units.
struct UnitLog {
    std::vector<std::atomic<int>> runs;
    std::vector<int> owner;
    std::vector<std::vector<size_t>> order;
    UnitLog(size_t units, int nth) : runs(units), owner(units, -1), order(nth) {}
};

void run_units(ThreadPool& pool, size_t units, UnitLog& log, const std::function<void(int, size_t)>& work = {}) {
    std::vector<ThreadPool::RangeCounter> counters(pool.size());
    pool.run([&](int ith, int nth) {
        ThreadPool::for_each_unit(counters.data(), units, ith, nth, [&](size_t u) {
            ASSERT_LT(u, units);
            log.runs[u].fetch_add(1);
            log.owner[u] = ith;
            log.order[ith].push_back(u);
            if (work) work(ith, u);
        });
    });
}

TEST(ThreadPool, ForEachUnitRunsEveryUnitOnceOwnRangeFrontToBack) {
    for (int threads : {1, 2, 3, 4}) {
        ThreadPool pool(threads);
        for (size_t units : {0u, 1u, 2u, 3u, 5u, 18u, 48u, 129u, 1000u}) {
            for (int rep = 0; rep < 20; ++rep) {
                UnitLog log(units, threads);
                run_units(pool, units, log);
                for (size_t u = 0; u < units; ++u) ASSERT_EQ(log.runs[u].load(), 1) << units << " units, unit " << u;
                // A range is a prefix its owner ran in order and a suffix the
                // others took from the back.
                for (int i = 0; i < threads; ++i) {
                    size_t b, e;
                    ThreadPool::split(units, 1, i, threads, b, e);
                    size_t u = b;
                    for (size_t k = 0; k < log.order[i].size() && log.order[i][k] >= b && log.order[i][k] < e; ++k)
                        ASSERT_EQ(log.order[i][k], u++) << "thread " << i << " ran its own range out of order";
                    for (; u < e; ++u) ASSERT_NE(log.owner[u], i) << "owner skipped unit " << u;
                }
            }
        }
    }
}

TEST(ThreadPool, ForEachUnitHandsASlowThreadsUnitsToTheOthers) {
    ThreadPool pool(2);
    const size_t units = 20;
    UnitLog log(units, 2);
    // Thread 1 takes 5 ms a unit, thread 0 nothing: thread 0 runs its own 10
    // and then takes thread 1's from the back while thread 1 sleeps. (Thread
    // 0 waits in its first unit until thread 1 has begun, else a late worker
    // would find every unit taken.)
    std::atomic<bool> second_began{false};
    run_units(pool, units, log, [&](int ith, size_t) {
        if (ith == 1) {
            second_began = true;
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        } else {
            const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
            while (!second_began && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        }
    });
    ASSERT_TRUE(second_began) << "thread 1 never ran a unit";
    for (size_t u = 0; u < units; ++u) ASSERT_EQ(log.runs[u].load(), 1);
    EXPECT_GT(log.order[0].size(), 10u) << "the idle thread took none of the slow one's units";
    ASSERT_FALSE(log.order[1].empty());
    EXPECT_EQ(log.order[1].front(), 10u) << "thread 1 starts at the front of its range";
    // What thread 0 took from thread 1's range came from the back, last first.
    std::vector<size_t> stolen;
    for (size_t u : log.order[0])
        if (u >= 10) stolen.push_back(u);
    for (size_t k = 0; k < stolen.size(); ++k) EXPECT_EQ(stolen[k], units - 1 - k);
}

KvCacheShape small_shape(size_t blocks) {
    KvCacheShape s;
    s.n_layer = 2;
    s.n_head_kv = 2;
    s.head_dim = 4;
    s.block_tokens = 4;
    s.n_blocks = blocks;
    s.max_sequences = 4;
    s.type = DType::F32;
    return s;
}

TEST(KvCache, AllocatesBlocksAndReportsExhaustion) {
    auto kv = KvCache::create(small_shape(3));
    ASSERT_TRUE(kv.ok());
    auto s = kv->create_sequence();
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(kv->reserve(*s, 10).ok());  // 3 blocks of 4
    kv->commit(*s, 10);
    EXPECT_EQ(kv->free_blocks(), 0u);
    auto st = kv->reserve(*s, 3);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kResourceExhausted);
    EXPECT_NE(st.error().message.find("KV cache is full"), std::string::npos);
    kv->free_sequence(*s);
    EXPECT_EQ(kv->free_blocks(), 3u);
}

TEST(KvCache, ForkSharesPrefixAndCopiesOnWrite) {
    auto kv = KvCache::create(small_shape(8));
    ASSERT_TRUE(kv.ok());
    auto a = *kv->create_sequence();
    ASSERT_TRUE(kv->reserve(a, 6).ok());
    for (size_t pos = 0; pos < 6; ++pos) reinterpret_cast<float*>(kv->k_at(a, 1, pos))[0] = float(pos);
    kv->commit(a, 6);
    EXPECT_EQ(kv->free_blocks(), 6u);
    auto b = kv->fork(a, 6);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(kv->free_blocks(), 6u);  // shared, nothing copied yet
    EXPECT_EQ(kv->length(*b), 6u);
    // b writes position 6: its tail block (shared, half full) is copied first.
    ASSERT_TRUE(kv->reserve(*b, 1).ok());
    EXPECT_EQ(kv->free_blocks(), 5u);
    reinterpret_cast<float*>(kv->k_at(*b, 1, 5))[0] = 99.f;
    EXPECT_EQ(reinterpret_cast<float*>(kv->k_at(a, 1, 5))[0], 5.f);  // a is unchanged
    EXPECT_EQ(reinterpret_cast<float*>(kv->k_at(*b, 1, 4))[0], 4.f);  // copied content
    EXPECT_EQ(kv->k_at(a, 1, 0), kv->k_at(*b, 1, 0));                 // first block still shared
    kv->free_sequence(a);
    kv->free_sequence(*b);
    EXPECT_EQ(kv->free_blocks(), 8u);
}

TEST(KvCache, TruncateReleasesWholeBlocks) {
    auto kv = KvCache::create(small_shape(8));
    ASSERT_TRUE(kv.ok());
    auto a = *kv->create_sequence();
    ASSERT_TRUE(kv->reserve(a, 12).ok());
    kv->commit(a, 12);
    ASSERT_TRUE(kv->truncate(a, 5).ok());
    EXPECT_EQ(kv->length(a), 5u);
    EXPECT_EQ(kv->blocks(a).size(), 2u);
    EXPECT_EQ(kv->free_blocks(), 6u);
    EXPECT_FALSE(kv->truncate(3, 0).ok());  // not a live sequence
}

TEST(KvCache, SequenceSlotsAreBounded) {
    auto kv = KvCache::create(small_shape(8));
    ASSERT_TRUE(kv.ok());
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(kv->create_sequence().ok());
    auto r = kv->create_sequence();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
}

TEST(Sampler, GreedyPicksArgmax) {
    Sampler s({});
    std::vector<float> logits = {0.1f, 3.f, -1.f, 2.9f};
    EXPECT_EQ(s.sample(logits, {}), 1);
}

TEST(Sampler, SameSeedSameTokens) {
    SamplerParams p;
    p.temperature = 1.0f;
    p.seed = 7;
    std::vector<float> logits(100);
    for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(float(i));
    Sampler a(p), b(p);
    std::vector<TokenId> ta, tb;
    for (int i = 0; i < 50; ++i) {
        ta.push_back(a.sample(logits, {}));
        tb.push_back(b.sample(logits, {}));
    }
    EXPECT_EQ(ta, tb);
    p.seed = 8;
    Sampler c(p);
    std::vector<TokenId> tc;
    for (int i = 0; i < 50; ++i) tc.push_back(c.sample(logits, {}));
    EXPECT_NE(ta, tc);
}

TEST(Sampler, TopKOneIsGreedyAndTopPRestricts) {
    std::vector<float> logits = {1.f, 5.f, 4.9f, 0.f};
    SamplerParams p;
    p.temperature = 1.f;
    p.top_k = 1;
    Sampler s(p);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(logits, {}), 1);
    p.top_k = 0;
    p.top_p = 0.5f;  // token 1 alone holds ~52%
    Sampler t(p);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(t.sample(logits, {}), 1);
}

TEST(Sampler, DistributionFollowsSoftmax) {
    std::vector<float> logits = {0.f, std::log(3.f)};  // p = 0.25, 0.75
    SamplerParams p;
    p.temperature = 1.f;
    p.seed = 123;
    Sampler s(p);
    int ones = 0;
    for (int i = 0; i < 20000; ++i) ones += s.sample(logits, {}) == 1;
    EXPECT_NEAR(ones / 20000.0, 0.75, 0.015);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
    std::vector<float> logits = {10.f, 9.5f, 0.f, 0.f};
    SamplerParams p;
    p.temperature = 1.f;
    p.min_p = 0.1f;
    p.seed = 1;
    Sampler s(p);
    for (int i = 0; i < 200; ++i) {
        const TokenId t = s.sample(logits, {});
        EXPECT_TRUE(t == 0 || t == 1);
    }
}

TEST(Sampler, RepetitionPenaltyDiscouragesHistory) {
    std::vector<float> logits = {2.f, 1.9f};
    SamplerParams p;
    p.repetition_penalty = 1.5f;
    Sampler s(p);
    std::vector<TokenId> history = {0, 0, 0};
    EXPECT_EQ(s.sample(logits, history), 1);  // 2/1.5 < 1.9
    EXPECT_EQ(s.sample(logits, {}), 0);
}

TEST(StopStrings, FindsEarliestAndHoldsBackPrefixes) {
    std::vector<std::string> stops = {"<|im_end|>", "\n\n"};
    auto m = find_stop("Hello<|im_", stops);
    EXPECT_EQ(m.position, std::string::npos);
    EXPECT_EQ(m.hold_back, 5u);  // "<|im_" may begin a stop string
    m = find_stop("Hi\n\nthere<|im_end|>", stops);
    EXPECT_EQ(m.position, 2u);
    m = find_stop("plain text", stops);
    EXPECT_EQ(m.position, std::string::npos);
    EXPECT_EQ(m.hold_back, 0u);
    m = find_stop("ends with newline\n", stops);
    EXPECT_EQ(m.hold_back, 1u);
}

TEST(Precision, NamesRoundTrip) {
    for (Precision p : {Precision::kNative, Precision::kFP32, Precision::kFP16, Precision::kBF16})
        EXPECT_EQ(precision_from_name(precision_name(p)), p);
    EXPECT_FALSE(precision_from_name("fp8").has_value());
}

}  // namespace
}  // namespace assistd::engine
