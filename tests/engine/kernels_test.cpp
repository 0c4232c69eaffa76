// The numeric kernels on every tier this CPU runs, against references written
// here in double precision (independent of the kernels), for sizes that are
// not multiples of any vector width.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
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

// 64-byte aligned bytes, as the model allocates activation buffers.
class AlignedBuffer {
public:
    explicit AlignedBuffer(size_t bytes)
        : size_(bytes), data_(std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64))) {
        std::memset(data_.get(), 0xcd, std::max<size_t>(64, (bytes + 63) / 64 * 64));
    }
    void* data() { return data_.get(); }
    size_t size() const { return size_; }

private:
    size_t size_;
    std::unique_ptr<void, FreeDeleter> data_;
};

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -1.f, float hi = 1.f) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& f : v) f = dist(rng);
    return v;
}

struct TierUnderTest {
    Tier tier;
    const KernelTable* table;
};

std::vector<TierUnderTest> tiers_under_test() {
    std::vector<TierUnderTest> tiers;
    for (Tier tier : available_tiers()) tiers.push_back({tier, kernel_table_for(tier)});
    return tiers;
}

// A weight matrix stored in `type`, and the exact float values it holds.
struct StoredMatrix {
    std::vector<unsigned char> bytes;
    std::vector<float> values;
};

StoredMatrix make_matrix(DType type, size_t rows, size_t cols, std::mt19937& rng) {
    StoredMatrix m;
    const std::vector<float> source = random_floats(rows * cols, rng);
    const size_t row_bytes = dtype_row_bytes(type, cols);
    m.bytes.resize(rows * row_bytes);
    m.values.resize(rows * cols);
    for (size_t r = 0; r < rows; ++r) {
        quantize_row(type, source.data() + r * cols, m.bytes.data() + r * row_bytes, cols);
        dequantize_row(type, m.bytes.data() + r * row_bytes, m.values.data() + r * cols, cols);
    }
    return m;
}

// Error bound of one output for a weight type, from the exact products' magnitudes.
//  F32: fp32 accumulation, 1e-5 of sum|w*x|.
//  F16: activations rounded to f16 (relative error <= 2^-11 each), so 1e-3 of sum|w*x|.
//  BF16: activations rounded to bf16 (relative error <= 2^-9 each), so 4e-3 of sum|w*x|.
//  Q8_0: activations quantized per 32-block to step d = amax/127 (error <= d/2 each),
//        so sum over blocks of sum|w| * amax/254 (+1%), plus 1e-5 of sum|w*x|.
double tolerance_for(DType type, const float* w, const float* x, size_t cols) {
    double sum_abs_products = 0.0;
    for (size_t k = 0; k < cols; ++k) sum_abs_products += std::fabs(double{w[k]} * double{x[k]});
    switch (type) {
        case DType::F32: return 1e-5 * sum_abs_products + 1e-30;
        case DType::F16: return 1e-3 * sum_abs_products + 1e-30;
        case DType::BF16: return 4e-3 * sum_abs_products + 1e-30;
        case DType::Q8_0: {
            double quantization = 0.0;
            for (size_t block = 0; block < cols / kQ8_0Block; ++block) {
                double sum_abs_w = 0.0, amax = 0.0;
                for (size_t k = block * kQ8_0Block; k < (block + 1) * kQ8_0Block; ++k) {
                    sum_abs_w += std::fabs(double{w[k]});
                    amax = std::max(amax, std::fabs(double{x[k]}));
                }
                quantization += sum_abs_w * amax / 254.0;
            }
            return 1.01 * quantization + 1e-5 * sum_abs_products + 1e-30;
        }
    }
    return 0.0;
}

const std::vector<size_t> kRowSizes = {1, 3, 17, 64, 100};
const std::vector<size_t> kBatchSizes = {1, 2, 3, 5, 8, 16, 33};

void check_matmul_for_type(DType type, const std::vector<size_t>& col_sizes,
                           const std::vector<size_t>& row_sizes = kRowSizes,
                           const std::vector<size_t>& batch_sizes = kBatchSizes) {
    const std::vector<TierUnderTest> tiers = tiers_under_test();
    std::mt19937 rng(1234);
    int failures = 0;
    for (size_t cols : col_sizes) {
        for (size_t rows : row_sizes) {
            const StoredMatrix w = make_matrix(type, rows, cols, rng);
            for (size_t nb : batch_sizes) {
                const std::vector<float> x = random_floats(nb * cols, rng);
                const size_t ldy = rows + 3;
                std::vector<double> expected(nb * rows);
                std::vector<double> tolerance(nb * rows);
                for (size_t b = 0; b < nb; ++b) {
                    for (size_t r = 0; r < rows; ++r) {
                        double sum = 0.0;
                        for (size_t k = 0; k < cols; ++k) sum += double{w.values[r * cols + k]} * double{x[b * cols + k]};
                        expected[b * rows + r] = sum;
                        tolerance[b * rows + r] = tolerance_for(type, &w.values[r * cols], &x[b * cols], cols);
                    }
                }
                // The whole matrix, and a range that starts and ends at odd rows.
                const size_t odd_start = rows > 2 ? 1 : 0;
                const size_t odd_end = rows > 2 ? rows - 1 : rows;
                for (const TierUnderTest& t : tiers) {
                    AlignedBuffer prepared(activation_row_bytes(type, cols) * nb);
                    prepare_activations_with(*t.table, type, x.data(), cols, nb, cols, prepared.data());
                    for (auto [r0, r1] : {std::pair{size_t{0}, rows}, std::pair{odd_start, odd_end}}) {
                        std::vector<float> y(nb * ldy, std::numeric_limits<float>::quiet_NaN());
                        matmul_with(*t.table, type, w.bytes.data(), cols, prepared.data(), nb, y.data(), ldy, r0, r1);
                        for (size_t b = 0; b < nb && failures < 10; ++b) {
                            for (size_t r = 0; r < ldy && failures < 10; ++r) {
                                const float got = y[b * ldy + r];
                                const std::string where = std::string(tier_name(t.tier)) + " " +
                                                          std::string(dtype_name(type)) + " cols=" +
                                                          std::to_string(cols) + " rows=" + std::to_string(rows) +
                                                          " nb=" + std::to_string(nb) + " r0=" + std::to_string(r0) +
                                                          " r1=" + std::to_string(r1) + " b=" + std::to_string(b) +
                                                          " r=" + std::to_string(r);
                                if (r < r0 || r >= r1) {
                                    if (!std::isnan(got)) {
                                        ADD_FAILURE() << "wrote outside its row range: " << where;
                                        ++failures;
                                    }
                                    continue;
                                }
                                const double want = expected[b * rows + r];
                                const double allowed = tolerance[b * rows + r];
                                if (!(std::fabs(double{got} - want) <= allowed)) {
                                    ADD_FAILURE() << where << " got " << got << " want " << want << " allowed "
                                                  << allowed;
                                    ++failures;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// Threads prepare the parts of a row they produced (attention heads, FFN row
// chunks); pieces must add up to exactly what a whole-row prepare writes.
TEST(KernelsTest, PreparingColumnPiecesEqualsPreparingWholeRows) {
    std::mt19937 rng(7);
    for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
        for (size_t cols : {size_t{64}, size_t{576}, size_t{1536}}) {
            const size_t nb = 3;
            const std::vector<float> x = random_floats(nb * (cols + 5), rng, -3.f, 3.f);
            for (const TierUnderTest& t : tiers_under_test()) {
                const size_t bytes = activation_row_bytes(type, cols) * nb;
                AlignedBuffer whole(bytes), pieces(bytes);
                std::memset(whole.data(), 0, bytes);
                std::memset(pieces.data(), 0, bytes);
                prepare_activations_with(*t.table, type, x.data(), cols + 5, nb, cols, whole.data());
                // Uneven pieces on block boundaries, prepared out of order.
                std::vector<size_t> cuts{0};
                for (size_t c = 32; c < cols; c += 32 * (1 + cuts.size() % 3)) cuts.push_back(c);
                cuts.push_back(cols);
                for (size_t i = cuts.size() - 1; i-- > 0;)
                    prepare_activation_columns_with(*t.table, type, x.data(), cols + 5, nb, cols, cuts[i],
                                                    cuts[i + 1], pieces.data());
                EXPECT_EQ(0, std::memcmp(whole.data(), pieces.data(), bytes))
                    << tier_name(t.tier) << " " << dtype_name(type) << " cols=" << cols;
            }
        }
    }
}

TEST(KernelsTest, EveryTierIncludesScalarAndTheActiveOne) {
    const std::vector<Tier> tiers = available_tiers();
    ASSERT_FALSE(tiers.empty());
    EXPECT_EQ(tiers.front(), Tier::kScalar);
    EXPECT_STREQ(active_tier(), tier_name(active_tier_id()));
    EXPECT_EQ(tiers.back(), active_tier_id());
    std::string names;
    for (Tier tier : tiers) names += std::string(" ") + tier_name(tier);
    std::printf("tiers on this CPU:%s (active: %s)\n", names.c_str(), active_tier());
    for (Tier tier : tiers) {
        ASSERT_NE(kernel_table_for(tier), nullptr) << tier_name(tier);
        EXPECT_STREQ(kernel_table_for(tier)->name, tier_name(tier));
    }
}

TEST(KernelsTest, ActivationRowsArePaddedTo64Bytes) {
    for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
        for (size_t cols : {32, 96, 576, 2048, 1536}) {
            EXPECT_EQ(activation_row_bytes(type, cols) % 64, 0u);
            EXPECT_GE(activation_row_bytes(type, cols), cols);
        }
    }
    EXPECT_EQ(activation_type(DType::F32), DType::F32);
    EXPECT_EQ(activation_type(DType::F16), DType::F16);
    EXPECT_EQ(activation_type(DType::BF16), DType::BF16);
    EXPECT_EQ(activation_type(DType::Q8_0), DType::Q8_0);
}

TEST(KernelsTest, MatmulF32MatchesReferenceOnEveryTier) {
    check_matmul_for_type(DType::F32, {32, 64, 96, 172, 576, 1536, 2048});
}
TEST(KernelsTest, MatmulF16MatchesReferenceOnEveryTier) {
    check_matmul_for_type(DType::F16, {32, 64, 96, 172, 576, 1536, 2048});
}
// Streamed F16 rows over 8 KiB prefetch ahead of themselves (past the
// matrix's end on the last rows); a tail of 8 columns follows the unrolled
// part. Decode over rows of up to 1,024 columns widens the activations to
// floats first (the longest such row, and the first one past it).
TEST(KernelsTest, MatmulF16LongRowsMatchReference) {
    check_matmul_for_type(DType::F16, {8192 + 40, 4096 + 8, 1024, 1024 + 8}, {1, 5}, {1, 2, 3, 4});
}
TEST(KernelsTest, MatmulBf16MatchesReferenceOnEveryTier) {
    check_matmul_for_type(DType::BF16, {32, 64, 96, 172, 576, 1536, 2048});
}
TEST(KernelsTest, MatmulQ8_0MatchesReferenceOnEveryTier) {
    check_matmul_for_type(DType::Q8_0, {32, 64, 96, 576, 1536, 2048});
}

// Long batches are walked in chunks that fit in L2 (a few rows when rows are long).
TEST(KernelsTest, MatmulBatchesSpanningSeveralCacheChunks) {
    for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
        check_matmul_for_type(type, {4096 + 64}, {9}, {70});
    }
}

TEST(KernelsTest, PublicMatmulUsesTheActiveTier) {
    std::mt19937 rng(7);
    const size_t rows = 9, cols = 96, nb = 3;
    for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0}) {
        const StoredMatrix w = make_matrix(type, rows, cols, rng);
        const std::vector<float> x = random_floats(nb * cols, rng);
        AlignedBuffer prepared(activation_row_bytes(type, cols) * nb);
        prepare_activations(type, x.data(), cols, nb, cols, prepared.data());
        std::vector<float> y(nb * rows);
        matmul(type, w.bytes.data(), cols, prepared.data(), nb, y.data(), rows, 0, rows);
        for (size_t b = 0; b < nb; ++b) {
            for (size_t r = 0; r < rows; ++r) {
                double want = 0.0;
                for (size_t k = 0; k < cols; ++k) want += double{w.values[r * cols + k]} * double{x[b * cols + k]};
                EXPECT_NEAR(y[b * rows + r], want, tolerance_for(type, &w.values[r * cols], &x[b * cols], cols))
                    << dtype_name(type);
            }
        }
    }
}

const std::vector<size_t> kVectorSizes = {1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 172, 1000};

std::vector<uint16_t> to_f16(const std::vector<float>& v) {
    std::vector<uint16_t> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) h[i] = fp32_to_fp16(v[i]);
    return h;
}

TEST(KernelsTest, DotProductsMatchReferenceOnEveryTier) {
    std::mt19937 rng(11);
    for (const TierUnderTest& t : tiers_under_test()) {
        for (size_t n : kVectorSizes) {
            const std::vector<float> a = random_floats(n, rng);
            const std::vector<float> b = random_floats(n, rng);
            const std::vector<uint16_t> b_half = to_f16(b);
            double want = 0.0, want_half = 0.0, magnitude = 0.0, magnitude_half = 0.0;
            for (size_t i = 0; i < n; ++i) {
                want += double{a[i]} * double{b[i]};
                magnitude += std::fabs(double{a[i]} * double{b[i]});
                const double bh = fp16_to_fp32(b_half[i]);
                want_half += double{a[i]} * bh;
                magnitude_half += std::fabs(double{a[i]} * bh);
            }
            EXPECT_NEAR(t.table->dot_f32(a.data(), b.data(), n), want, 1e-6 * magnitude + 1e-30)
                << tier_name(t.tier) << " n=" << n;
            EXPECT_NEAR(t.table->dot_f32_f16(a.data(), b_half.data(), n), want_half, 1e-6 * magnitude_half + 1e-30)
                << tier_name(t.tier) << " n=" << n;
        }
    }
}

TEST(KernelsTest, AxpyMatchesReferenceAndStaysInBoundsOnEveryTier) {
    std::mt19937 rng(12);
    constexpr size_t kGuard = 16;
    for (const TierUnderTest& t : tiers_under_test()) {
        for (size_t n : kVectorSizes) {
            const std::vector<float> x = random_floats(n, rng);
            const std::vector<uint16_t> x_half = to_f16(x);
            const std::vector<float> y0 = random_floats(n + kGuard, rng);
            const float alpha = 0.37f;
            std::vector<float> y = y0, y_half = y0;
            t.table->axpy_f32(alpha, x.data(), y.data(), n);
            t.table->axpy_f16(alpha, x_half.data(), y_half.data(), n);
            for (size_t i = 0; i < n + kGuard; ++i) {
                if (i >= n) {
                    EXPECT_EQ(y[i], y0[i]) << "axpy_f32 wrote past n: " << tier_name(t.tier);
                    EXPECT_EQ(y_half[i], y0[i]) << "axpy_f16 wrote past n: " << tier_name(t.tier);
                    continue;
                }
                const double want = double{y0[i]} + double{alpha} * double{x[i]};
                const double want_half = double{y0[i]} + double{alpha} * double{fp16_to_fp32(x_half[i])};
                const double bound = 2e-7 * (std::fabs(double{y0[i]}) + std::fabs(double{alpha} * x[i])) + 1e-30;
                EXPECT_NEAR(y[i], want, bound) << tier_name(t.tier) << " n=" << n << " i=" << i;
                EXPECT_NEAR(y_half[i], want_half, bound) << tier_name(t.tier) << " n=" << n << " i=" << i;
            }
        }
    }
}

// Values that exercise rounding, subnormals, overflow and NaN in the float conversions.
std::vector<float> awkward_floats(std::mt19937& rng, size_t n) {
    std::vector<float> v = random_floats(n, rng, -70000.f, 70000.f);
    const float specials[] = {0.f,       -0.f,     1.f,        -1.f,      65504.f,     65520.f,   -65536.f,
                              1e-8f,     -3e-7f,   6.1e-5f,    5.96e-8f,  2.98e-8f,    1.0009765625f,
                              std::numeric_limits<float>::infinity(),   -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(),  1e-40f,      -1e-39f,   3.4e38f,
                              1.00390625f, 1.01171875f, 0.333333f};
    for (size_t i = 0; i < std::size(specials) && i < n; ++i) v[(i * 7) % n] = specials[i];
    for (size_t i = 0; i < n; i += 5) v[i] *= 1e-4f;
    return v;
}

bool same_half(uint16_t a, uint16_t b) {
    const bool a_nan = (a & 0x7c00) == 0x7c00 && (a & 0x3ff);
    const bool b_nan = (b & 0x7c00) == 0x7c00 && (b & 0x3ff);
    return a_nan || b_nan ? a_nan == b_nan : a == b;
}

TEST(KernelsTest, FloatConversionsMatchScalarRoundingOnEveryTier) {
    std::mt19937 rng(13);
    for (const TierUnderTest& t : tiers_under_test()) {
        for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{23}, size_t{63}, size_t{172}, size_t{1000}}) {
            const std::vector<float> x = awkward_floats(rng, std::max<size_t>(n, 1));
            std::vector<uint16_t> half(n + 8, 0xbeef), brain(n + 8, 0xbeef);
            t.table->convert_f32_to_f16(x.data(), half.data(), n);
            t.table->convert_f32_to_bf16(x.data(), brain.data(), n);
            for (size_t i = 0; i < n; ++i) {
                EXPECT_TRUE(same_half(half[i], fp32_to_fp16(x[i])))
                    << tier_name(t.tier) << " f16 of " << x[i] << ": " << half[i] << " vs " << fp32_to_fp16(x[i]);
                EXPECT_EQ(brain[i], fp32_to_bf16(x[i])) << tier_name(t.tier) << " bf16 of " << x[i];
            }
            for (size_t i = n; i < n + 8; ++i) {
                EXPECT_EQ(half[i], 0xbeef) << "wrote past n";
                EXPECT_EQ(brain[i], 0xbeef) << "wrote past n";
            }
        }
        // Every half and every bf16 bit pattern back to float.
        std::vector<uint16_t> all(65536);
        for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
        std::vector<float> from_half(all.size()), from_brain(all.size());
        t.table->convert_f16_to_f32(all.data(), from_half.data(), all.size() - 3);  // odd length on purpose
        t.table->convert_bf16_to_f32(all.data(), from_brain.data(), all.size() - 3);
        for (size_t i = 0; i + 3 < all.size(); ++i) {
            const float want_half = fp16_to_fp32(all[i]);
            const float want_brain = bf16_to_fp32(all[i]);
            if (std::isnan(want_half)) {
                EXPECT_TRUE(std::isnan(from_half[i])) << tier_name(t.tier) << " half " << i;
            } else {
                EXPECT_EQ(fp32_to_bits(from_half[i]), fp32_to_bits(want_half)) << tier_name(t.tier) << " half " << i;
            }
            if (std::isnan(want_brain)) {
                EXPECT_TRUE(std::isnan(from_brain[i])) << tier_name(t.tier) << " bf16 " << i;
            } else {
                EXPECT_EQ(fp32_to_bits(from_brain[i]), fp32_to_bits(want_brain)) << tier_name(t.tier) << " bf16 " << i;
            }
        }
    }
}

TEST(KernelsTest, ConvertRowsBetweenEveryPairOnEveryTier) {
    std::mt19937 rng(14);
    const DType sources[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0};
    const DType destinations[] = {DType::F32, DType::F16, DType::BF16};
    for (const TierUnderTest& t : tiers_under_test()) {
        for (DType src_type : sources) {
            for (DType dst_type : destinations) {
                for (size_t n : {size_t{1}, size_t{7}, size_t{8}, size_t{63}, size_t{172}, size_t{32}, size_t{96},
                                 size_t{2048 + 32}}) {
                    if (n % dtype_block_elems(src_type) != 0) continue;
                    const std::vector<float> values = random_floats(n, rng, -3.f, 3.f);
                    std::vector<unsigned char> src(dtype_row_bytes(src_type, n));
                    quantize_row(src_type, values.data(), src.data(), n);
                    // Expected: the scalar path through float.
                    std::vector<float> as_float(n);
                    dequantize_row(src_type, src.data(), as_float.data(), n);
                    std::vector<unsigned char> expected(dtype_row_bytes(dst_type, n));
                    quantize_row(dst_type, as_float.data(), expected.data(), n);

                    constexpr size_t kGuard = 32;
                    std::vector<unsigned char> got(expected.size() + kGuard, 0x5a);
                    convert_rows_with(*t.table, src_type, src.data(), dst_type, got.data(), n);
                    EXPECT_EQ(0, std::memcmp(got.data(), expected.data(), expected.size()))
                        << tier_name(t.tier) << " " << dtype_name(src_type) << " -> " << dtype_name(dst_type)
                        << " n=" << n;
                    for (size_t i = expected.size(); i < got.size(); ++i) EXPECT_EQ(got[i], 0x5a) << "wrote past n";
                }
            }
        }
    }
}

TEST(KernelsTest, RmsNormMatchesReferenceOnEveryTier) {
    std::mt19937 rng(15);
    for (const TierUnderTest& t : tiers_under_test()) {
        for (size_t n : kVectorSizes) {
            const std::vector<float> x = random_floats(n, rng, -4.f, 4.f);
            const std::vector<float> w = random_floats(n, rng, 0.5f, 1.5f);
            std::vector<float> y(n + 4, 42.f);
            const float eps = 1e-5f;
            t.table->rms_norm(x.data(), w.data(), eps, y.data(), n);
            double mean_square = 0.0;
            for (float v : x) mean_square += double{v} * v;
            mean_square /= static_cast<double>(n);
            const double scale = 1.0 / std::sqrt(mean_square + eps);
            for (size_t i = 0; i < n; ++i) {
                const double want = double{x[i]} * scale * double{w[i]};
                EXPECT_NEAR(y[i], want, 1e-5 * std::fabs(want) + 1e-30) << tier_name(t.tier) << " n=" << n;
            }
            for (size_t i = n; i < n + 4; ++i) EXPECT_EQ(y[i], 42.f) << "wrote past n";
        }
    }
}

TEST(KernelsTest, SwigluMatchesReferenceOnEveryTier) {
    std::mt19937 rng(16);
    for (const TierUnderTest& t : tiers_under_test()) {
        for (size_t n : kVectorSizes) {
            std::vector<float> g = random_floats(n, rng, -20.f, 20.f);
            if (n > 3) {
                g[0] = -100.f;
                g[1] = 100.f;
                g[2] = 0.f;
            }
            const std::vector<float> u = random_floats(n, rng, -2.f, 2.f);
            std::vector<float> y(n + 4, 42.f);
            t.table->swiglu(g.data(), u.data(), y.data(), n);
            for (size_t i = 0; i < n; ++i) {
                const double gi = g[i];
                const double want = gi / (1.0 + std::exp(-gi)) * double{u[i]};
                EXPECT_NEAR(y[i], want, 2e-6 * std::fabs(gi * u[i]) + 1e-30)
                    << tier_name(t.tier) << " g=" << g[i] << " u=" << u[i];
            }
            for (size_t i = n; i < n + 4; ++i) EXPECT_EQ(y[i], 42.f) << "wrote past n";
        }
    }
}

}  // namespace
}  // namespace assistd::engine::kernels
