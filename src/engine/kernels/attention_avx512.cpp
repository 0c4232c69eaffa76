// The attention kernel and exp on the AVX-512 tier (16 lanes); the
// AVX512-BF16 tier uses these too.
// GCC 12's AVX-512 headers self-initialise their "undefined" vectors, which
// -Wuninitialized reports after inlining; the warning is about the header, not us.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "engine/kernels/attention_impl.h"
#include "engine/kernels/avx512_reduce.h"

namespace assistd::engine::kernels {
namespace {

struct Avx512Vec {
    static constexpr size_t W = 16;
    static constexpr size_t kPositionBlock = 8;  // 8 x 2 score accumulators
    static constexpr size_t kDimBlock = 8;       // 8 x 2 output accumulators
    using T = __m512;
    static T zero() { return _mm512_setzero_ps(); }
    static T set1(float x) { return _mm512_set1_ps(x); }
    static T load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, T x) { _mm512_storeu_ps(p, x); }
    static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
    static T add(T a, T b) { return _mm512_add_ps(a, b); }
    static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
    static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
    static T max(T a, T b) { return _mm512_max_ps(a, b); }
    static float first(T x) { return _mm512_cvtss_f32(x); }
    static float reduce_add(T x) { return _mm512_reduce_add_ps(x); }
    // exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its
    // Taylor polynomial to r^7 (truncation below 1e-8 relative).
    static T exp(T x) {
        const __mmask16 underflow = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.33654f), _CMP_LT_OQ);
        x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.33654f)), _mm512_set1_ps(88.f));
        const T n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        T r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
        T p = _mm512_set1_ps(1.f / 5040.f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 720.f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
        const __m512i scale =
            _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
        return _mm512_maskz_mul_ps(static_cast<__mmask16>(~underflow), p,
                                   _mm512_castsi512_ps(scale));
    }
    static T mask_greater(T s, T pos, T limit) {
        return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(pos, limit, _CMP_GT_OQ),
                                  _mm512_set1_ps(-__builtin_inff()));
    }
    static void convert_f16(const uint16_t* x, float* y, size_t n) {
        for (size_t i = 0; i < n; i += 16) {
            const __mmask16 m = low_lanes16(n - i < 16 ? n - i : 16);
            _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
        }
    }
};

}  // namespace

void attention_avx512(const AttentionArgs& args) {
    attention_detail::attention<Avx512Vec>(args);
}
void exp_f32_avx512(const float* x, float* y, size_t n) {
    attention_detail::exp_array<Avx512Vec>(x, y, n);
}

}  // namespace assistd::engine::kernels
