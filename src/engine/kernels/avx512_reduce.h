#pragma once
// Helpers shared by the AVX-512 tiers: tail masks and the matmul tiles'
// horizontal sums. Included by each AVX-512 translation unit; internal
// linkage, so every TU keeps the copy compiled with its own target flags.
#include <immintrin.h>

#include <cstddef>

namespace assistd::engine::kernels {
namespace {

// The mask of the low n of 16 lanes (n <= 16).
inline __mmask16 low_lanes16(size_t n) { return static_cast<__mmask16>((1u << n) - 1); }

// {sum(a), sum(b), sum(c), sum(d)}: one transpose-and-add tree instead of
// four separate reductions (a tile of 4 weight rows stores its 4 outputs
// for one activation row at once).
inline __m128 reduce4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Per 128-bit lane: [a, b, c, d] partial sums.
    const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                      _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 halves = _mm256_add_ps(_mm512_castps512_ps256(abcd),
                                        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(halves), _mm256_extractf128_ps(halves, 1));
}

}  // namespace
}  // namespace assistd::engine::kernels
