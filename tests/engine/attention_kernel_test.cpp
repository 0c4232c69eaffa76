// The attention kernel and the vector exp on every tier this CPU runs, against
// references written here in double precision: causal masking inside a query
// block, GQA groups, KV blocks scattered in memory, F16 and F32 caches, and
// keys split in ranges whose partial softmaxes are merged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {
namespace {

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

std::unique_ptr<float, FreeDeleter> aligned_floats(size_t n) {
    const size_t bytes = std::max<size_t>(64, (n * sizeof(float) + 63) / 64 * 64);
    auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    // Garbage, not zeros: the kernel must initialise all the scratch it reads.
    std::fill(p, p + bytes / sizeof(float), std::numeric_limits<float>::quiet_NaN());
    return std::unique_ptr<float, FreeDeleter>(p);
}

// One sequence's K and V for one KV head in a block cache: blocks of
// `block_tokens` positions, stored in shuffled order among spare blocks, each
// position a row of `row_elements` elements (other heads' slots around ours).
struct CachedHead {
    DType type = DType::F32;
    size_t head_dim = 0, block_tokens = 0, row_elements = 0, head_offset = 0;
    std::vector<unsigned char> k_storage, v_storage;
    std::vector<const void*> k_blocks, v_blocks;
    std::vector<double> k, v;  // the stored values, position-major, for the reference

    size_t element_bytes() const { return type == DType::F16 ? 2 : 4; }
    size_t row_bytes() const { return row_elements * element_bytes(); }
};

void store_element(DType type, unsigned char* dst, float value, double& stored) {
    if (type == DType::F16) {
        const uint16_t h = fp32_to_fp16(value);
        std::memcpy(dst, &h, 2);
        stored = fp16_to_fp32(h);
    } else {
        std::memcpy(dst, &value, 4);
        stored = value;
    }
}

CachedHead make_cache(DType type, size_t head_dim, size_t block_tokens, size_t n_positions,
                      std::mt19937& rng) {
    CachedHead c;
    c.type = type;
    c.head_dim = head_dim;
    c.block_tokens = block_tokens;
    c.row_elements = head_dim * 3;  // two other heads' slots per row
    c.head_offset = head_dim;       // ours is the middle one
    const size_t n_blocks = (n_positions + block_tokens - 1) / block_tokens;
    const size_t storage_blocks = n_blocks + 2;
    const size_t block_bytes = block_tokens * c.row_bytes();
    c.k_storage.assign(storage_blocks * block_bytes, 0);
    c.v_storage.assign(storage_blocks * block_bytes, 0);
    // Everything not ours holds NaN: reading it would poison the output.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    double ignored = 0;
    for (size_t i = 0; i < storage_blocks * block_tokens * c.row_elements; ++i) {
        store_element(type, c.k_storage.data() + i * c.element_bytes(), nan, ignored);
        store_element(type, c.v_storage.data() + i * c.element_bytes(), nan, ignored);
    }
    std::vector<size_t> order(storage_blocks);
    std::iota(order.begin(), order.end(), size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    std::uniform_real_distribution<float> dist(-1.f, 1.f);
    c.k.resize(n_positions * head_dim);
    c.v.resize(n_positions * head_dim);
    for (size_t b = 0; b < n_blocks; ++b) {
        c.k_blocks.push_back(c.k_storage.data() + order[b] * block_bytes +
                             c.head_offset * c.element_bytes());
        c.v_blocks.push_back(c.v_storage.data() + order[b] * block_bytes +
                             c.head_offset * c.element_bytes());
    }
    for (size_t pos = 0; pos < n_positions; ++pos) {
        const size_t offset = (pos % block_tokens) * c.row_bytes();
        auto* krow =
            static_cast<unsigned char*>(const_cast<void*>(c.k_blocks[pos / block_tokens])) + offset;
        auto* vrow =
            static_cast<unsigned char*>(const_cast<void*>(c.v_blocks[pos / block_tokens])) + offset;
        for (size_t d = 0; d < head_dim; ++d) {
            store_element(type, krow + d * c.element_bytes(), dist(rng), c.k[pos * head_dim + d]);
            store_element(type, vrow + d * c.element_bytes(), dist(rng), c.v[pos * head_dim + d]);
        }
    }
    return c;
}

struct Case {
    size_t head_dim, group, n_queries, first_pos, block_tokens;
    DType kv_type;
    float q_magnitude;  // large values make the softmax peaky
};

std::string describe(const Case& c, Tier tier) {
    return std::string(tier_name(tier)) + " hd=" + std::to_string(c.head_dim) +
           " group=" + std::to_string(c.group) + " queries=" + std::to_string(c.n_queries) +
           " first_pos=" + std::to_string(c.first_pos) +
           " block=" + std::to_string(c.block_tokens) +
           " kv=" + (c.kv_type == DType::F16 ? "f16" : "f32") +
           " |q|<=" + std::to_string(c.q_magnitude);
}

// Runs one case on every tier; returns the largest error seen (tests assert on it).
double run_case(const Case& c, std::mt19937& rng) {
    const size_t hd = c.head_dim, G = c.group, n_pos = c.first_pos + c.n_queries;
    const CachedHead cache = make_cache(c.kv_type, hd, c.block_tokens, n_pos, rng);
    // Query rows of a wider layer (two more heads around the group), as in the model.
    const size_t token_stride = (G + 2) * hd;
    std::uniform_real_distribution<float> dist(-c.q_magnitude, c.q_magnitude);
    std::vector<float> q(c.n_queries * token_stride);
    for (float& x : q) x = dist(rng);
    const float* group_q = q.data() + hd;
    const float scale = 1.f / std::sqrt(static_cast<float>(hd));

    // Reference: query token i attends to positions [0, first_pos + i].
    std::vector<double> want(c.n_queries * G * hd);
    for (size_t i = 0; i < c.n_queries; ++i) {
        for (size_t g = 0; g < G; ++g) {
            const float* qr = group_q + i * token_stride + g * hd;
            const size_t visible = c.first_pos + i + 1;
            std::vector<double> s(visible);
            double max_score = -std::numeric_limits<double>::infinity();
            for (size_t j = 0; j < visible; ++j) {
                double dot = 0;
                for (size_t d = 0; d < hd; ++d) dot += double{qr[d]} * cache.k[j * hd + d];
                s[j] = dot * scale;
                max_score = std::max(max_score, s[j]);
            }
            double sum = 0;
            for (double& x : s) sum += (x = std::exp(x - max_score));
            for (size_t d = 0; d < hd; ++d) {
                double o = 0;
                for (size_t j = 0; j < visible; ++j) o += s[j] * cache.v[j * hd + d];
                want[(i * G + g) * hd + d] = o / sum;
            }
        }
    }

    double worst = 0;
    for (Tier tier : available_tiers()) {
        const KernelTable* table = kernel_table_for(tier);
        const size_t out_stride = token_stride + 5;  // the gaps must stay untouched
        std::vector<float> out(c.n_queries * out_stride, -7.f);
        auto scratch = aligned_floats(attention_scratch_floats(c.n_queries * G, hd));
        AttentionArgs a;
        a.q = group_q;
        a.q_token_stride = token_stride;
        a.n_queries = c.n_queries;
        a.n_group = G;
        a.head_dim = hd;
        a.first_pos = c.first_pos;
        a.scale = scale;
        a.k_blocks = cache.k_blocks.data();
        a.v_blocks = cache.v_blocks.data();
        a.block_tokens = c.block_tokens;
        a.kv_row_bytes = cache.row_bytes();
        a.kv_type = c.kv_type;
        a.out = out.data() + hd;
        a.out_token_stride = out_stride;
        a.scratch = scratch.get();
        table->attention(a);
        for (size_t i = 0; i < c.n_queries; ++i) {
            for (size_t x = 0; x < out_stride; ++x) {
                const float got = out[i * out_stride + x];
                if (x < hd || x >= hd + G * hd) {
                    if (got != -7.f) {
                        ADD_FAILURE()
                            << describe(c, tier) << ": wrote outside its heads at token " << i;
                        return worst;
                    }
                    continue;
                }
                const size_t g = (x - hd) / hd, d = (x - hd) % hd;
                const double expected = want[(i * G + g) * hd + d];
                const double error = std::fabs(double{got} - expected);
                worst = std::max(worst, error);
                // V lies in [-1, 1], so the output does too: an absolute bound.
                EXPECT_LE(error, 2e-5) << describe(c, tier) << " token " << i << " head " << g
                                       << " dim " << d << ": got " << got << " want " << expected;
                if (error > 2e-5) return worst;
            }
        }
    }

    // The keys split in three ranges (one starting mid-tile, one inside the
    // query block, so early rows see none of it), merged from each range's
    // softmax max and sum.
    const size_t cuts[] = {0, c.first_pos / 3, c.first_pos + c.n_queries / 2, n_pos};
    for (Tier tier : available_tiers()) {
        const KernelTable* table = kernel_table_for(tier);
        const size_t R = c.n_queries * G;
        std::vector<std::vector<float>> outs, maxima, sums;
        for (size_t s = 0; s + 1 < std::size(cuts); ++s) {
            outs.emplace_back(c.n_queries * G * hd, -7.f);
            maxima.emplace_back(R, -7.f);
            sums.emplace_back(R, -7.f);
            auto scratch = aligned_floats(attention_scratch_floats(R, hd));
            AttentionArgs a;
            a.q = group_q;
            a.q_token_stride = token_stride;
            a.n_queries = c.n_queries;
            a.n_group = G;
            a.head_dim = hd;
            a.first_pos = c.first_pos;
            a.scale = scale;
            a.k_blocks = cache.k_blocks.data();
            a.v_blocks = cache.v_blocks.data();
            a.block_tokens = c.block_tokens;
            a.kv_row_bytes = cache.row_bytes();
            a.kv_type = c.kv_type;
            a.out = outs.back().data();
            a.out_token_stride = G * hd;
            a.scratch = scratch.get();
            a.kv_begin = cuts[s];
            a.kv_end = cuts[s + 1];
            a.row_max = maxima.back().data();
            a.row_sum = sums.back().data();
            a.row_state_token_stride = G;
            table->attention(a);
        }
        for (size_t r = 0; r < R; ++r) {
            double top = -std::numeric_limits<double>::infinity();
            for (size_t s = 0; s < outs.size(); ++s) {
                if (sums[s][r] > 0.f) {
                    top = std::max(top, double{maxima[s][r]});
                } else if (sums[s][r] != 0.f ||
                           maxima[s][r] != -std::numeric_limits<float>::infinity()) {
                    ADD_FAILURE() << describe(c, tier)
                                  << ": a row seeing no key must report sum 0 and max -inf";
                    return worst;
                }
            }
            for (size_t d = 0; d < hd; ++d) {
                double num = 0, den = 0;
                for (size_t s = 0; s < outs.size(); ++s) {
                    if (!(sums[s][r] > 0.f)) {
                        if (outs[s][r * hd + d] != 0.f) {
                            ADD_FAILURE()
                                << describe(c, tier) << ": a row seeing no key must output 0";
                            return worst;
                        }
                        continue;
                    }
                    const double w = sums[s][r] * std::exp(double{maxima[s][r]} - top);
                    num += w * outs[s][r * hd + d];
                    den += w;
                }
                const double error = std::fabs(num / den - want[r * hd + d]);
                worst = std::max(worst, error);
                if (error > 2e-5) {
                    ADD_FAILURE() << describe(c, tier) << " split: row " << r << " dim " << d
                                  << " error " << error;
                    return worst;
                }
            }
        }
    }
    return worst;
}

TEST(AttentionKernel, MatchesDoubleReferenceOnEveryTier) {
    std::mt19937 rng(2026);
    double worst = 0;
    for (size_t hd : {48, 64, 128}) {
        for (size_t group : {1, 3, 4, 8}) {
            // One query (decode), a few, and blocks of odd lengths whose rows
            // fill both schedules (head dimension in lanes and rows in lanes).
            for (size_t n_queries : {1, 2, 7, 23}) {
                // Starting at 0, inside the first KV tile, and past tile (64) and block boundaries.
                for (size_t first_pos : {0, 5, 61, 130}) {
                    for (DType kv_type : {DType::F32, DType::F16}) {
                        const size_t block_tokens = (first_pos % 2) ? 7 : 16;
                        worst = std::max(worst, run_case({hd, group, n_queries, first_pos,
                                                          block_tokens, kv_type, 1.f},
                                                         rng));
                        if (HasFatalFailure() || HasFailure()) return;
                    }
                }
            }
        }
    }
    std::printf("[ attention ] worst absolute error %.3g\n", worst);
}

TEST(AttentionKernel, LongContextAndPeakySoftmaxOnEveryTier) {
    std::mt19937 rng(7);
    // 1,500 cached positions crossing many tiles and blocks, for decode and a prefill block.
    run_case({64, 3, 1, 1500, 16, DType::F16, 1.f}, rng);
    run_case({64, 3, 21, 1500, 16, DType::F16, 1.f}, rng);
    run_case({128, 8, 5, 999, 32, DType::F32, 1.f}, rng);
    // Scores in the hundreds: the running max must keep exp in range and the
    // rescaling of earlier tiles must be exact enough when the max moves.
    run_case({64, 3, 1, 700, 16, DType::F32, 40.f}, rng);
    run_case({64, 4, 17, 700, 16, DType::F16, 40.f}, rng);
}

TEST(AttentionKernel, FirstQueryOfASequenceSeesOnlyItself) {
    // At position 0 the output is V[0] exactly (one weight of 1).
    std::mt19937 rng(3);
    const CachedHead cache = make_cache(DType::F32, 16, 16, 1, rng);
    for (Tier tier : available_tiers()) {
        std::vector<float> q(16, 0.5f), out(16, 0.f);
        auto scratch = aligned_floats(attention_scratch_floats(1, 16));
        AttentionArgs a;
        a.q = q.data();
        a.q_token_stride = 16;
        a.n_queries = 1;
        a.n_group = 1;
        a.head_dim = 16;
        a.k_blocks = cache.k_blocks.data();
        a.v_blocks = cache.v_blocks.data();
        a.block_tokens = 16;
        a.kv_row_bytes = cache.row_bytes();
        a.out = out.data();
        a.out_token_stride = 16;
        a.scratch = scratch.get();
        kernel_table_for(tier)->attention(a);
        for (size_t d = 0; d < 16; ++d)
            EXPECT_EQ(out[d], static_cast<float>(cache.v[d])) << tier_name(tier);
    }
}

TEST(AttentionKernel, ScratchCoversEveryLayout) {
    for (size_t rows : {1, 3, 31, 32, 33, 64, 200}) {
        for (size_t hd : {2, 16, 48, 64, 80, 128}) {
            const AttentionScratchLayout layout = attention_scratch_layout(rows, hd);
            EXPECT_GE(layout.rows_padded, rows);
            EXPECT_EQ(layout.rows_padded % kAttentionRowPad, 0u);
            EXPECT_GE(layout.head_padded, hd);
            EXPECT_EQ(layout.head_padded % 16, 0u);
            for (size_t offset : {layout.q, layout.out, layout.max, layout.sum, layout.limit,
                                  layout.k, layout.v, layout.scores})
                EXPECT_EQ(offset % 16, 0u) << "sections start 64-byte aligned";
            EXPECT_GE(layout.total, layout.scores + kAttentionTile * layout.rows_padded);
            EXPECT_EQ(attention_scratch_floats(rows, hd), layout.total);
        }
    }
}

TEST(AttentionKernel, OddHeadDimensionsOnEveryTier) {
    // Head sizes that are not a multiple of any vector width (the tails).
    std::mt19937 rng(5);
    for (size_t hd : {2, 18, 40, 80}) {
        run_case({hd, 2, 1, 33, 16, DType::F16, 1.f}, rng);
        run_case({hd, 3, 11, 70, 16, DType::F32, 1.f}, rng);
        if (HasFailure()) return;
    }
}

TEST(VectorExp, MatchesStdExpOnEveryTier) {
    std::vector<float> x;
    for (float v = -87.f; v <= 88.f; v += 0.0137f) x.push_back(v);
    for (float v :
         {0.f, -0.f, 1.f, -1.f, 1e-8f, -1e-8f, 0.5f * 0.693147f, -0.5f * 0.693147f, 88.f, -87.f})
        x.push_back(v);
    for (Tier tier : available_tiers()) {
        std::vector<float> y(x.size() + 1, -3.f);
        kernel_table_for(tier)->exp_f32(x.data(), y.data(), x.size());
        double worst = 0;
        for (size_t i = 0; i < x.size(); ++i) {
            const double want = std::exp(double{x[i]});
            const double rel = std::fabs(double{y[i]} - want) / want;
            worst = std::max(worst, rel);
            ASSERT_LE(rel, 1e-6) << tier_name(tier) << " exp(" << x[i] << ") = " << y[i]
                                 << ", want " << want;
        }
        EXPECT_EQ(y[x.size()], -3.f) << tier_name(tier) << " wrote past the end";
        std::printf("[ %s ] exp worst relative error %.3g\n", tier_name(tier), worst);
    }
}

TEST(VectorExp, UnderflowsToZeroAndKeepsExactPoints) {
    const float inf = std::numeric_limits<float>::infinity();
    // Odd lengths, so both the vector body and the tail are used.
    const std::vector<float> x = {-inf, -1000.f, -88.f, 0.f, -inf,   0.f, -200.f, -inf, 0.f, -90.f,
                                  0.f,  -inf,    -inf,  0.f, -1e30f, 0.f, -inf,   0.f,  0.f};
    for (Tier tier : available_tiers()) {
        std::vector<float> y(x.size());
        kernel_table_for(tier)->exp_f32(x.data(), y.data(), x.size());
        for (size_t i = 0; i < x.size(); ++i) {
            if (x[i] == 0.f) {
                EXPECT_EQ(y[i], 1.f) << tier_name(tier);
            } else {
                EXPECT_LE(y[i], 1e-37f) << tier_name(tier) << " exp(" << x[i] << ")";
                EXPECT_GE(y[i], 0.f) << tier_name(tier) << " exp(" << x[i] << ")";
            }
            if (x[i] == -inf) {
                EXPECT_EQ(y[i], 0.f) << tier_name(tier);
            }
        }
    }
}

TEST(AttentionKernel, PublicEntryPointUsesTheActiveTier) {
    std::mt19937 rng(9);
    const CachedHead cache = make_cache(DType::F16, 64, 16, 40, rng);
    std::vector<float> q(3 * 64 * 2);
    for (float& v : q) v = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
    auto run = [&](void (*fn)(const AttentionArgs&)) {
        std::vector<float> out(q.size());
        auto scratch = aligned_floats(attention_scratch_floats(6, 64));
        AttentionArgs a;
        a.q = q.data();
        a.q_token_stride = 3 * 64;
        a.n_queries = 2;
        a.n_group = 3;
        a.head_dim = 64;
        a.first_pos = 38;
        a.scale = 0.125f;
        a.k_blocks = cache.k_blocks.data();
        a.v_blocks = cache.v_blocks.data();
        a.block_tokens = 16;
        a.kv_row_bytes = cache.row_bytes();
        a.kv_type = DType::F16;
        a.out = out.data();
        a.out_token_stride = 3 * 64;
        a.scratch = scratch.get();
        fn(a);
        return out;
    };
    EXPECT_EQ(run(attention), run(kernel_table_for(active_tier_id())->attention));
}

}  // namespace
}  // namespace assistd::engine::kernels
