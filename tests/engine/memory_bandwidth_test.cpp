// The memory-bandwidth probe: its streaming kernels on every tier against
// plain loops written here (odd lengths, unaligned starts, nothing written
// past the end), and the probe's figures and checksum.
#include "engine/memory_bandwidth.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"

namespace assistd::engine {
namespace {

constexpr size_t kLengths[] = {0,  1,  3,  7,   8,   15,  16,   31,  33,
                               63, 64, 65, 127, 200, 513, 1000, 4099};

TEST(StreamKernels, ReadSumEqualsAPlainSumOnEveryTier) {
    std::mt19937_64 rng(5);
    std::vector<uint64_t> words(4099 + 1);
    for (auto& w : words) w = rng();  // full-range words: the sum wraps, as it must
    for (kernels::Tier tier : kernels::available_tiers()) {
        const kernels::KernelTable& table = *kernels::kernel_table_for(tier);
        for (size_t offset : {0, 1}) {
            for (size_t n : kLengths) {
                SCOPED_TRACE(testing::Message()
                             << table.name << " n=" << n << " offset=" << offset);
                uint64_t want = 0;
                for (size_t i = 0; i < n; ++i) want += words[offset + i];
                EXPECT_EQ(table.stream_read_sum(words.data() + offset, n), want);
            }
        }
    }
}

TEST(StreamKernels, ReadSumSeesEveryWord) {
    // One changed word anywhere changes the sum by exactly its difference.
    std::vector<uint64_t> words(1000, 0x0101010101010101ull);
    for (kernels::Tier tier : kernels::available_tiers()) {
        const kernels::KernelTable& table = *kernels::kernel_table_for(tier);
        const uint64_t base = table.stream_read_sum(words.data(), words.size());
        for (size_t at : {size_t{0}, size_t{7}, size_t{63}, size_t{64}, size_t{511}, size_t{999}}) {
            SCOPED_TRACE(testing::Message() << table.name << " at=" << at);
            words[at] += 5;
            EXPECT_EQ(table.stream_read_sum(words.data(), words.size()), base + 5);
            words[at] -= 5;
        }
    }
}

TEST(StreamKernels, CopyAndTriadMatchPlainLoopsAndStayInBoundsOnEveryTier) {
    constexpr float kGuard = -12345.f;
    for (kernels::Tier tier : kernels::available_tiers()) {
        const kernels::KernelTable& table = *kernels::kernel_table_for(tier);
        for (size_t n : kLengths) {
            SCOPED_TRACE(testing::Message() << table.name << " n=" << n);
            std::vector<float> a(n + 17), b(n + 17), c(n + 17, kGuard);
            for (size_t i = 0; i < n; ++i) {
                a[i + 1] = static_cast<float>(i % 1001) - 500.f;
                b[i + 1] = static_cast<float>(i % 13);
            }
            table.stream_copy(a.data() + 1, c.data() + 1, n);
            EXPECT_EQ(c[0], kGuard);
            for (size_t i = 0; i < n; ++i) ASSERT_EQ(c[i + 1], a[i + 1]) << i;
            for (size_t i = n + 1; i < c.size(); ++i) ASSERT_EQ(c[i], kGuard) << i;

            std::fill(a.begin(), a.end(), kGuard);
            table.stream_triad(a.data() + 1, b.data() + 1, c.data() + 1, 3.f, n);
            EXPECT_EQ(a[0], kGuard);
            for (size_t i = 0; i < n; ++i) ASSERT_EQ(a[i + 1], b[i + 1] + 3.f * c[i + 1]) << i;
            for (size_t i = n + 1; i < a.size(); ++i) ASSERT_EQ(a[i], kGuard) << i;
        }
    }
}

TEST(StreamKernels, PublicEntryPointsUseTheActiveTier) {
    std::vector<uint64_t> words(77);
    for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9e3779b97f4a7c15ull;
    const auto& active = *kernels::kernel_table_for(kernels::active_tier_id());
    EXPECT_EQ(kernels::stream_read_sum(words.data(), words.size()),
              active.stream_read_sum(words.data(), words.size()));
}

uint64_t expected_checksum(size_t array_bytes) {
    uint64_t sum = 0;
    for (size_t i = 0; i < array_bytes / sizeof(float); i += 2) {
        const float pair[2] = {memory_probe_element(i), memory_probe_element(i + 1)};
        uint64_t word;
        std::memcpy(&word, pair, sizeof word);
        sum += word;
    }
    return sum;
}

TEST(MemoryBandwidthProbe, ReportsEveryStreamAndTheArraysChecksum) {
    for (const bool huge : {true, false}) {
        for (const int threads : {1, 2, 3}) {
            SCOPED_TRACE(testing::Message() << "huge " << huge << " threads " << threads);
            MemoryBandwidthOptions o;
            o.n_threads = threads;
            o.array_bytes = (size_t{6} << 20) + 4096 * 3;  // not a multiple of the threads' split
            o.reps = 2;
            o.huge_pages = huge;
            auto r = measure_memory_bandwidth(o);
            ASSERT_TRUE(r.ok()) << r.error().message;
            EXPECT_EQ(r->n_threads, threads);
            EXPECT_EQ(r->read_checksum, expected_checksum(o.array_bytes));
            EXPECT_EQ(r->expected_checksum, r->read_checksum);
            EXPECT_EQ(r->kernels, kernels::active_tier());
            EXPECT_EQ(r->read.bytes_per_pass, static_cast<double>(o.array_bytes));
            EXPECT_EQ(r->copy.bytes_per_pass, 2.0 * static_cast<double>(o.array_bytes));
            EXPECT_EQ(r->triad.bytes_per_pass, 3.0 * static_cast<double>(o.array_bytes));
            for (const StreamFigure* f : {&r->read, &r->copy, &r->triad}) {
                EXPECT_GT(f->best_gb_per_s, 0.0);
                EXPECT_GE(f->best_gb_per_s, f->median_gb_per_s);
            }
        }
    }
}

TEST(MemoryBandwidthProbe, ReadAloneLeavesCopyAndTriadEmpty) {
    MemoryBandwidthOptions o;
    o.n_threads = 2;
    o.array_bytes = size_t{4} << 20;
    o.reps = 1;
    o.copy_and_triad = false;
    auto r = measure_memory_bandwidth(o);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_GT(r->read.best_gb_per_s, 0.0);
    EXPECT_EQ(r->copy.best_gb_per_s, 0.0);
    EXPECT_EQ(r->triad.best_gb_per_s, 0.0);
    EXPECT_EQ(r->read_checksum, expected_checksum(o.array_bytes));
}

TEST(MemoryBandwidthProbe, ReadPassesInterleaveWithOtherWork) {
    MemoryBandwidthOptions o;
    o.n_threads = 2;
    o.array_bytes = size_t{2} << 20;
    o.copy_and_triad = false;
    auto probe = MemoryProbe::create(o);
    ASSERT_TRUE(probe.ok()) << probe.error().message;
    MemoryProbe& p = **probe;
    EXPECT_EQ(p.expected_checksum(), expected_checksum(o.array_bytes));
    for (int i = 0; i < 3; ++i) {
        auto rate = p.read_pass();
        ASSERT_TRUE(rate.ok()) << rate.error().message;
        EXPECT_GT(*rate, 0.0);
        EXPECT_EQ(p.read_checksum(), p.expected_checksum());
    }
    EXPECT_EQ(p.copy_pass().error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(p.triad_pass().error().code, ErrorCode::kInvalidArgument);
}

TEST(MemoryBandwidthProbe, RejectsBadOptions) {
    MemoryBandwidthOptions o;
    o.array_bytes = size_t{1} << 20;
    o.n_threads = 0;
    EXPECT_EQ(measure_memory_bandwidth(o).error().code, ErrorCode::kInvalidArgument);
    o.n_threads = 1;
    o.reps = 0;
    EXPECT_EQ(measure_memory_bandwidth(o).error().code, ErrorCode::kInvalidArgument);
    o.reps = 1;
    o.array_bytes = 1000;
    EXPECT_EQ(measure_memory_bandwidth(o).error().code, ErrorCode::kInvalidArgument);
    o.array_bytes = size_t{1} << 50;
    const auto too_big = measure_memory_bandwidth(o);
    ASSERT_FALSE(too_big.ok());
    EXPECT_EQ(too_big.error().code, ErrorCode::kResourceExhausted);
    EXPECT_NE(too_big.error().message.find("use smaller arrays"), std::string::npos);
}

}  // namespace
}  // namespace assistd::engine
