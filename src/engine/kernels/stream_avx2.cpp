// The memory-bandwidth probe's streaming kernels on the AVX2 tier: 256-bit
// loads, eight per iteration (256 bytes, four cache lines) into four
// independent accumulators, so the loads of many lines are in flight at once.
#include <immintrin.h>

#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {

uint64_t stream_read_sum_avx2(const uint64_t* p, size_t n) {
    __m256i acc0 = _mm256_setzero_si256(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    auto load = [&](size_t i) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    };
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_add_epi64(acc0, load(i));
        acc1 = _mm256_add_epi64(acc1, load(i + 4));
        acc2 = _mm256_add_epi64(acc2, load(i + 8));
        acc3 = _mm256_add_epi64(acc3, load(i + 12));
        acc0 = _mm256_add_epi64(acc0, load(i + 16));
        acc1 = _mm256_add_epi64(acc1, load(i + 20));
        acc2 = _mm256_add_epi64(acc2, load(i + 24));
        acc3 = _mm256_add_epi64(acc3, load(i + 28));
    }
    for (; i + 4 <= n; i += 4) acc0 = _mm256_add_epi64(acc0, load(i));
    const __m256i acc =
        _mm256_add_epi64(_mm256_add_epi64(acc0, acc1), _mm256_add_epi64(acc2, acc3));
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
    uint64_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; ++i) sum += p[i];
    return sum;
}

void stream_copy_avx2(const float* a, float* c, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256 v0 = _mm256_loadu_ps(a + i), v1 = _mm256_loadu_ps(a + i + 8);
        const __m256 v2 = _mm256_loadu_ps(a + i + 16), v3 = _mm256_loadu_ps(a + i + 24);
        _mm256_storeu_ps(c + i, v0);
        _mm256_storeu_ps(c + i + 8, v1);
        _mm256_storeu_ps(c + i + 16, v2);
        _mm256_storeu_ps(c + i + 24, v3);
    }
    for (; i < n; ++i) c[i] = a[i];
}

void stream_triad_avx2(float* a, const float* b, const float* c, float s, size_t n) {
    const __m256 sv = _mm256_set1_ps(s);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 r0 = _mm256_fmadd_ps(sv, _mm256_loadu_ps(c + i), _mm256_loadu_ps(b + i));
        const __m256 r1 =
            _mm256_fmadd_ps(sv, _mm256_loadu_ps(c + i + 8), _mm256_loadu_ps(b + i + 8));
        _mm256_storeu_ps(a + i, r0);
        _mm256_storeu_ps(a + i + 8, r1);
    }
    for (; i < n; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace assistd::engine::kernels
