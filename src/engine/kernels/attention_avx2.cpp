// The attention kernel and exp on the AVX2 + FMA + F16C tier (8 lanes).
#include <immintrin.h>

#include "engine/kernels/attention_impl.h"

namespace assistd::engine::kernels {
namespace {

struct Avx2Vec {
    static constexpr size_t W = 8;
    static constexpr size_t kPositionBlock = 4;  // 4 x 2 score accumulators
    static constexpr size_t kDimBlock = 4;       // 4 x 2 output accumulators
    using T = __m256;
    static T zero() { return _mm256_setzero_ps(); }
    static T set1(float x) { return _mm256_set1_ps(x); }
    static T load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, T x) { _mm256_storeu_ps(p, x); }
    static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
    static T add(T a, T b) { return _mm256_add_ps(a, b); }
    static T sub(T a, T b) { return _mm256_sub_ps(a, b); }
    static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
    static T max(T a, T b) { return _mm256_max_ps(a, b); }
    static float first(T x) { return _mm256_cvtss_f32(x); }
    static float reduce_add(T x) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    // exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its
    // Taylor polynomial to r^7 (truncation below 1e-8 relative).
    static T exp(T x) {
        const T underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.33654f), _CMP_LT_OQ);
        x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.f));
        const T n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        T r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
        r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
        T p = _mm256_set1_ps(1.f / 5040.f);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720.f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120.f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24.f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6.f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
        const __m256i scale =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(scale)));
    }
    static T mask_greater(T s, T pos, T limit) {
        return _mm256_blendv_ps(s, _mm256_set1_ps(-__builtin_inff()),
                                _mm256_cmp_ps(pos, limit, _CMP_GT_OQ));
    }
    static void convert_f16(const uint16_t* x, float* y, size_t n) {
        size_t i = 0;
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(
                y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
        for (; i < n; ++i) y[i] = _cvtsh_ss(x[i]);
    }
};

}  // namespace

void attention_avx2(const AttentionArgs& args) {
    attention_detail::attention<Avx2Vec>(args);
}
void exp_f32_avx2(const float* x, float* y, size_t n) {
    attention_detail::exp_array<Avx2Vec>(x, y, n);
}

}  // namespace assistd::engine::kernels
