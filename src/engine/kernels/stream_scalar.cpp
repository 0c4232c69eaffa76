// The memory-bandwidth probe's streaming kernels on the portable tier (and the
// reference the SIMD tiers are tested against): four independent sums so the
// loop is not one long dependency chain even when the compiler keeps it scalar.
#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {

uint64_t stream_read_sum_scalar(const uint64_t* p, size_t n) {
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; ++i) s0 += p[i];
    return s0 + s1 + s2 + s3;
}

void stream_copy_scalar(const float* a, float* c, size_t n) {
    for (size_t i = 0; i < n; ++i) c[i] = a[i];
}

void stream_triad_scalar(float* a, const float* b, const float* c, float s, size_t n) {
    for (size_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
}

}  // namespace assistd::engine::kernels
