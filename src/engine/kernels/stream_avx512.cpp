// The memory-bandwidth probe's streaming kernels on the AVX-512 tiers:
// 512-bit loads, four per iteration (256 bytes, four cache lines) into four
// independent accumulators; tails use masked loads and stores.
// GCC 12's AVX-512 headers self-initialise their "undefined" vectors, which
// -Wuninitialized reports after inlining; the warning is about the header, not us.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "engine/kernels/avx512_reduce.h"
#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {

uint64_t stream_read_sum_avx512(const uint64_t* p, size_t n) {
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    auto load = [&](size_t i) { return _mm512_loadu_si512(p + i); };
    size_t i = 0;
    // Four lines per iteration: eight (512 bytes) measured ~20% slower on
    // the Zen 5 VM, one thread (25 against 31 GB/s), as were prefetches.
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_add_epi64(acc0, load(i));
        acc1 = _mm512_add_epi64(acc1, load(i + 8));
        acc2 = _mm512_add_epi64(acc2, load(i + 16));
        acc3 = _mm512_add_epi64(acc3, load(i + 24));
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm512_add_epi64(acc0, load(i));
    if (i < n) {
        const auto tail = static_cast<__mmask8>((1u << (n - i)) - 1);
        acc1 = _mm512_add_epi64(acc1, _mm512_maskz_loadu_epi64(tail, p + i));
    }
    // The lanes are added as unsigned words: the checksum wraps by design, and
    // _mm512_reduce_add_epi64 adds them as signed (overflow UBSan reports).
    alignas(64) uint64_t lanes[8];
    _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(acc0, acc1), _mm512_add_epi64(acc2, acc3)));
    uint64_t sum = 0;
    for (const uint64_t lane : lanes) sum += lane;
    return sum;
}

void stream_copy_avx512(const float* a, float* c, size_t n) {
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512 v0 = _mm512_loadu_ps(a + i), v1 = _mm512_loadu_ps(a + i + 16);
        const __m512 v2 = _mm512_loadu_ps(a + i + 32), v3 = _mm512_loadu_ps(a + i + 48);
        _mm512_storeu_ps(c + i, v0);
        _mm512_storeu_ps(c + i + 16, v1);
        _mm512_storeu_ps(c + i + 32, v2);
        _mm512_storeu_ps(c + i + 48, v3);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = low_lanes16(n - i < 16 ? n - i : 16);
        _mm512_mask_storeu_ps(c + i, m, _mm512_maskz_loadu_ps(m, a + i));
    }
}

void stream_triad_avx512(float* a, const float* b, const float* c, float s, size_t n) {
    const __m512 sv = _mm512_set1_ps(s);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m512 r0 = _mm512_fmadd_ps(sv, _mm512_loadu_ps(c + i), _mm512_loadu_ps(b + i));
        const __m512 r1 =
            _mm512_fmadd_ps(sv, _mm512_loadu_ps(c + i + 16), _mm512_loadu_ps(b + i + 16));
        _mm512_storeu_ps(a + i, r0);
        _mm512_storeu_ps(a + i + 16, r1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = low_lanes16(n - i < 16 ? n - i : 16);
        _mm512_mask_storeu_ps(
            a + i, m,
            _mm512_fmadd_ps(sv, _mm512_maskz_loadu_ps(m, c + i), _mm512_maskz_loadu_ps(m, b + i)));
    }
}

}  // namespace assistd::engine::kernels
