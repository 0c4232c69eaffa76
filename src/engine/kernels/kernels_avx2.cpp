// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; only called
// when the CPU has them). Matmuls register-block 4 weight rows x up to 2
// activation rows, so each weight row is read once per batch tile; a lone
// activation row (decode) streams the weight rows one at a time.
#include <immintrin.h>

#include <cmath>

#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {
namespace {

float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

struct F32Loader {
    using Element = float;
    static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
    static float load1(const float* p) { return *p; }
};

struct F16Loader {
    using Element = uint16_t;
    static __m256 load8(const uint16_t* p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
    static float load1(const uint16_t* p) { return half_to_float(*p); }
};

struct Bf16Loader {
    using Element = uint16_t;
    static __m256 load8(const uint16_t* p) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
    static float load1(const uint16_t* p) { return bf16_to_fp32(*p); }
};

// One tile: kRows weight rows starting at `row` times kCols activation rows starting at `x`.
template <typename WeightLoader, typename ActLoader, int kRows, int kCols>
void matmul_tile(const typename WeightLoader::Element* w, size_t cols, const unsigned char* x, size_t x_row_bytes,
                 float* y, size_t ldy, size_t row) {
    using WeightT = typename WeightLoader::Element;
    using ActT = typename ActLoader::Element;
    // With one activation row, a second accumulator set hides the FMA latency.
    constexpr int kUnroll = kCols == 1 ? 2 : 1;
    const WeightT* w_rows[kRows];
    const ActT* x_rows[kCols];
    for (int i = 0; i < kRows; ++i) w_rows[i] = w + (row + i) * cols;
    for (int c = 0; c < kCols; ++c) x_rows[c] = reinterpret_cast<const ActT*>(x + c * x_row_bytes);

    __m256 acc[kUnroll][kRows][kCols];
    for (int u = 0; u < kUnroll; ++u)
        for (int i = 0; i < kRows; ++i)
            for (int c = 0; c < kCols; ++c) acc[u][i][c] = _mm256_setzero_ps();

    size_t k = 0;
    for (; k + 8 * kUnroll <= cols; k += 8 * kUnroll) {
        for (int u = 0; u < kUnroll; ++u) {
            __m256 xv[kCols];
            for (int c = 0; c < kCols; ++c) xv[c] = ActLoader::load8(x_rows[c] + k + 8 * u);
            for (int i = 0; i < kRows; ++i) {
                const __m256 wv = WeightLoader::load8(w_rows[i] + k + 8 * u);
                for (int c = 0; c < kCols; ++c) acc[u][i][c] = _mm256_fmadd_ps(wv, xv[c], acc[u][i][c]);
            }
        }
    }
    for (; k + 8 <= cols; k += 8) {
        __m256 xv[kCols];
        for (int c = 0; c < kCols; ++c) xv[c] = ActLoader::load8(x_rows[c] + k);
        for (int i = 0; i < kRows; ++i) {
            const __m256 wv = WeightLoader::load8(w_rows[i] + k);
            for (int c = 0; c < kCols; ++c) acc[0][i][c] = _mm256_fmadd_ps(wv, xv[c], acc[0][i][c]);
        }
    }
    for (int i = 0; i < kRows; ++i) {
        for (int c = 0; c < kCols; ++c) {
            __m256 total = acc[0][i][c];
            for (int u = 1; u < kUnroll; ++u) total = _mm256_add_ps(total, acc[u][i][c]);
            float sum = horizontal_sum(total);
            for (size_t t = k; t < cols; ++t) sum += WeightLoader::load1(w_rows[i] + t) * ActLoader::load1(x_rows[c] + t);
            y[c * ldy + row + i] = sum;
        }
    }
}

constexpr int kTileRows = 4;
constexpr int kTileCols = 2;

template <typename WeightLoader, typename ActLoader, int kRows>
void matmul_row_block(const typename WeightLoader::Element* w, size_t cols, const unsigned char* x, size_t x_row_bytes,
                      size_t nb, float* y, size_t ldy, size_t row) {
    size_t b = 0;
    for (; b + kTileCols <= nb; b += kTileCols) {
        matmul_tile<WeightLoader, ActLoader, kRows, kTileCols>(w, cols, x + b * x_row_bytes, x_row_bytes, y + b * ldy,
                                                               ldy, row);
    }
    for (; b < nb; ++b) {
        matmul_tile<WeightLoader, ActLoader, kRows, 1>(w, cols, x + b * x_row_bytes, x_row_bytes, y + b * ldy, ldy, row);
    }
}

template <typename WeightLoader, typename ActLoader>
void matmul_tiled(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                  size_t r0, size_t r1) {
    const auto* weights = static_cast<const typename WeightLoader::Element*>(w);
    const size_t chunk = batch_chunk_rows(x_row_bytes, kTileCols);
    for (size_t b0 = 0; b0 < nb; b0 += chunk) {
        const auto* x_bytes = static_cast<const unsigned char*>(x) + b0 * x_row_bytes;
        const size_t chunk_nb = nb - b0 < chunk ? nb - b0 : chunk;
        float* y_chunk = y + b0 * ldy;
        size_t r = r0;
        // One activation row (decode): memory-bound, and the hardware
        // prefetcher streams one weight row at a time far better than four
        // interleaved. This tier on the Zen 5 VM (ASSISTD_CPU=avx2),
        // smollm2-135m decode alternating 4-row tiles / single rows: F32 56.6
        // -> 88.4 tok/s, F16 77.7 -> 129.6, BF16 68.9 -> 121.6, Q8_0 95.1 -> 236.4.
        const bool streaming = chunk_nb < kTileCols;
        for (; !streaming && r + kTileRows <= r1; r += kTileRows) {
            matmul_row_block<WeightLoader, ActLoader, kTileRows>(weights, cols, x_bytes, x_row_bytes, chunk_nb, y_chunk,
                                                                 ldy, r);
        }
        for (; r < r1; ++r) {
            matmul_row_block<WeightLoader, ActLoader, 1>(weights, cols, x_bytes, x_row_bytes, chunk_nb, y_chunk, ldy, r);
        }
    }
}

void matmul_f32(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                size_t r0, size_t r1) {
    matmul_tiled<F32Loader, F32Loader>(w, cols, x, x_row_bytes, nb, y, ldy, r0, r1);
}

void matmul_f16(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                size_t r0, size_t r1) {
    matmul_tiled<F16Loader, F16Loader>(w, cols, x, x_row_bytes, nb, y, ldy, r0, r1);
}

void matmul_bf16(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                 size_t r0, size_t r1) {
    matmul_tiled<Bf16Loader, Bf16Loader>(w, cols, x, x_row_bytes, nb, y, ldy, r0, r1);
}

// Q8_0: |x| (unsigned) times w with x's sign (signed) through maddubs; 16-bit pair
// sums stay below 2 * 128 * 127, so nothing saturates.
template <int kRows, int kCols>
void q8_tile(const BlockQ8_0* w, size_t blocks, const Q8ActivationLayout& layout, const unsigned char* x,
             size_t x_row_bytes, float* y, size_t ldy, size_t row) {
    const BlockQ8_0* w_rows[kRows];
    const float* x_scales[kCols];
    const int8_t* x_quants[kCols];
    for (int i = 0; i < kRows; ++i) w_rows[i] = w + (row + i) * blocks;
    for (int c = 0; c < kCols; ++c) {
        x_scales[c] = reinterpret_cast<const float*>(x + c * x_row_bytes + layout.scales_offset);
        x_quants[c] = reinterpret_cast<const int8_t*>(x + c * x_row_bytes + layout.quants_offset);
    }
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[kRows][kCols];
    for (int i = 0; i < kRows; ++i)
        for (int c = 0; c < kCols; ++c) acc[i][c] = _mm256_setzero_ps();

    for (size_t block = 0; block < blocks; ++block) {
        __m256i xq[kCols];
        __m256i x_abs[kCols];
        for (int c = 0; c < kCols; ++c) {
            xq[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x_quants[c] + block * kQ8_0Block));
            x_abs[c] = _mm256_abs_epi8(xq[c]);
        }
        for (int i = 0; i < kRows; ++i) {
            const BlockQ8_0& wb = w_rows[i][block];
            const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb.qs));
            const float dw = half_to_float(wb.d);
            for (int c = 0; c < kCols; ++c) {
                const __m256i pairs = _mm256_maddubs_epi16(x_abs[c], _mm256_sign_epi8(wq, xq[c]));
                const __m256 sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                acc[i][c] = _mm256_fmadd_ps(sums, _mm256_set1_ps(dw * x_scales[c][block]), acc[i][c]);
            }
        }
    }
    for (int i = 0; i < kRows; ++i)
        for (int c = 0; c < kCols; ++c) y[c * ldy + row + i] = horizontal_sum(acc[i][c]);
}

template <int kRows>
void q8_row_block(const BlockQ8_0* w, size_t blocks, const Q8ActivationLayout& layout, const unsigned char* x,
                  size_t x_row_bytes, size_t nb, float* y, size_t ldy, size_t row) {
    size_t b = 0;
    for (; b + kTileCols <= nb; b += kTileCols) {
        q8_tile<kRows, kTileCols>(w, blocks, layout, x + b * x_row_bytes, x_row_bytes, y + b * ldy, ldy, row);
    }
    for (; b < nb; ++b) q8_tile<kRows, 1>(w, blocks, layout, x + b * x_row_bytes, x_row_bytes, y + b * ldy, ldy, row);
}

void matmul_q8_0(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                 size_t r0, size_t r1) {
    const auto* weights = static_cast<const BlockQ8_0*>(w);
    const Q8ActivationLayout layout = q8_activation_layout(cols);
    const size_t blocks = cols / kQ8_0Block;
    const size_t chunk = batch_chunk_rows(x_row_bytes, kTileCols);
    for (size_t b0 = 0; b0 < nb; b0 += chunk) {
        const auto* x_bytes = static_cast<const unsigned char*>(x) + b0 * x_row_bytes;
        const size_t chunk_nb = nb - b0 < chunk ? nb - b0 : chunk;
        float* y_chunk = y + b0 * ldy;
        size_t r = r0;
        // One activation row (decode): one weight row at a time, as above.
        for (; chunk_nb > 1 && r + kTileRows <= r1; r += kTileRows) {
            q8_row_block<kTileRows>(weights, blocks, layout, x_bytes, x_row_bytes, chunk_nb, y_chunk, ldy, r);
        }
        for (; r < r1; ++r) q8_row_block<1>(weights, blocks, layout, x_bytes, x_row_bytes, chunk_nb, y_chunk, ldy, r);
    }
}

float dot_f32(const float* a, const float* b, size_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

float dot_f32_f16(const float* a, const uint16_t* b, size_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), F16Loader::load8(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), F16Loader::load8(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), F16Loader::load8(b + i), acc0);
    float sum = horizontal_sum(_mm256_add_ps(acc0, acc1));
    for (; i < n; ++i) sum += a[i] * half_to_float(b[i]);
    return sum;
}

void axpy_f32(float alpha, const float* x, float* y, size_t n) {
    const __m256 a = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += alpha * x[i];
}

void axpy_f16(float alpha, const uint16_t* x, float* y, size_t n) {
    const __m256 a = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, F16Loader::load8(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] += alpha * half_to_float(x[i]);
}

void convert_f32_to_f16(const float* x, uint16_t* y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void convert_f16_to_f32(const uint16_t* x, float* y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F16Loader::load8(x + i));
    for (; i < n; ++i) y[i] = half_to_float(x[i]);
}

// Round to nearest even on the bit pattern (as fp32_to_bf16), NaNs kept quiet.
__m256i bf16_bits_of(__m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(64));
    const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    return _mm256_blendv_epi8(rounded, quiet_nan, _mm256_castps_si256(is_nan));
}

void convert_f32_to_bf16(const float* x, uint16_t* y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i low = bf16_bits_of(_mm256_loadu_ps(x + i));
        const __m256i high = bf16_bits_of(_mm256_loadu_ps(x + i + 8));
        // packus works per 128-bit lane; the permute puts the four quarters back in order.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(low, high), 0xd8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + i), packed);
    }
    for (; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

void convert_bf16_to_f32(const uint16_t* x, float* y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, Bf16Loader::load8(x + i));
    for (; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

void rms_norm(const float* x, const float* w, float eps, float* y, size_t n) {
    const float scale = 1.f / std::sqrt(dot_f32(x, x, n) / static_cast<float>(n) + eps);
    const __m256 s = _mm256_set1_ps(scale);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(w + i)));
    }
    for (; i < n; ++i) y[i] = x[i] * scale * w[i];
}

// e^v for v in [-87, 88]: 2^n * e^r with |r| <= ln2/2 and a degree-6 Taylor polynomial (rel. error < 2e-7).
__m256 exp_approx(__m256 v) {
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), v);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.f / 720.f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
    const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
}

void swiglu(const float* g, const float* u, float* y, size_t n) {
    const __m256 one = _mm256_set1_ps(1.f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 sigmoid_denominator = _mm256_add_ps(one, exp_approx(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(gv, sigmoid_denominator), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

constexpr KernelTable kAvx2Table = {
    .name = "avx2",
    .matmul_f32 = matmul_f32,
    .matmul_f16 = matmul_f16,
    .matmul_bf16 = matmul_bf16,
    .matmul_q8_0 = matmul_q8_0,
    .dot_f32 = dot_f32,
    .dot_f32_f16 = dot_f32_f16,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .convert_f32_to_f16 = convert_f32_to_f16,
    .convert_f16_to_f32 = convert_f16_to_f32,
    .convert_f32_to_bf16 = convert_f32_to_bf16,
    .convert_bf16_to_f32 = convert_bf16_to_f32,
    .rms_norm = rms_norm,
    .swiglu = swiglu,
    .exp_f32 = exp_f32_avx2,
    .attention = attention_avx2,
    .stream_read_sum = stream_read_sum_avx2,
    .stream_copy = stream_copy_avx2,
    .stream_triad = stream_triad_avx2,
};

}  // namespace

const KernelTable* avx2_kernel_table() { return &kAvx2Table; }

}  // namespace assistd::engine::kernels
