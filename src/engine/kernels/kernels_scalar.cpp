// Portable kernels for x86-64 without AVX2 (and the reference the SIMD tiers
// are tested against). Written so the compiler can vectorise the inner loops.
#include <cmath>
#include <cstring>

#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels {
namespace {

constexpr size_t kLanes = 8;  // independent partial sums, so the adds can pipeline

// A row-times-row dot product; `load_w` turns a stored weight into float.
template <typename WeightT, typename LoadW, typename ActT, typename LoadX>
float dot_generic(const WeightT* w, LoadW load_w, const ActT* x, LoadX load_x, size_t n) {
    float partial[kLanes] = {};
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (size_t lane = 0; lane < kLanes; ++lane) partial[lane] += load_w(w[i + lane]) * load_x(x[i + lane]);
    }
    float sum = 0.f;
    for (; i < n; ++i) sum += load_w(w[i]) * load_x(x[i]);
    for (size_t lane = 0; lane < kLanes; ++lane) sum += partial[lane];
    return sum;
}

float identity(float v) { return v; }
float half_to_float(uint16_t h) { return fp16_to_fp32(h); }
float brain_to_float(uint16_t h) { return bf16_to_fp32(h); }

template <typename WeightT, typename LoadW, typename ActT, typename LoadX>
void matmul_generic(const WeightT* w, LoadW load_w, size_t cols, const void* x, LoadX load_x, size_t x_row_bytes,
                    size_t nb, float* y, size_t ldy, size_t r0, size_t r1) {
    const auto* x_bytes = static_cast<const unsigned char*>(x);
    for (size_t r = r0; r < r1; ++r) {
        const WeightT* row = w + r * cols;
        for (size_t b = 0; b < nb; ++b) {
            const auto* xb = reinterpret_cast<const ActT*>(x_bytes + b * x_row_bytes);
            y[b * ldy + r] = dot_generic(row, load_w, xb, load_x, cols);
        }
    }
}

void matmul_f32(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                size_t r0, size_t r1) {
    matmul_generic<float, float (*)(float), float>(static_cast<const float*>(w), identity, cols, x, identity,
                                                   x_row_bytes, nb, y, ldy, r0, r1);
}

void matmul_f16(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                size_t r0, size_t r1) {
    matmul_generic<uint16_t, float (*)(uint16_t), uint16_t>(static_cast<const uint16_t*>(w), half_to_float, cols, x,
                                                            half_to_float, x_row_bytes, nb, y, ldy, r0, r1);
}

void matmul_bf16(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                 size_t r0, size_t r1) {
    matmul_generic<uint16_t, float (*)(uint16_t), uint16_t>(static_cast<const uint16_t*>(w), brain_to_float, cols, x,
                                                            brain_to_float, x_row_bytes, nb, y, ldy, r0, r1);
}

void matmul_q8_0(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                 size_t r0, size_t r1) {
    const size_t blocks = cols / kQ8_0Block;
    const Q8ActivationLayout layout = q8_activation_layout(cols);
    const auto* weights = static_cast<const BlockQ8_0*>(w);
    const auto* x_bytes = static_cast<const unsigned char*>(x);
    for (size_t r = r0; r < r1; ++r) {
        const BlockQ8_0* row = weights + r * blocks;
        for (size_t b = 0; b < nb; ++b) {
            const unsigned char* xb = x_bytes + b * x_row_bytes;
            const auto* scales = reinterpret_cast<const float*>(xb + layout.scales_offset);
            const auto* quants = reinterpret_cast<const int8_t*>(xb + layout.quants_offset);
            float sum = 0.f;
            for (size_t block = 0; block < blocks; ++block) {
                int32_t isum = 0;
                const int8_t* xq = quants + block * kQ8_0Block;
                for (size_t i = 0; i < kQ8_0Block; ++i) isum += int32_t{row[block].qs[i]} * int32_t{xq[i]};
                sum += static_cast<float>(isum) * (fp16_to_fp32(row[block].d) * scales[block]);
            }
            y[b * ldy + r] = sum;
        }
    }
}

float dot_f32(const float* a, const float* b, size_t n) {
    return dot_generic<float, float (*)(float), float, float (*)(float)>(a, identity, b, identity, n);
}

float dot_f32_f16(const float* a, const uint16_t* b, size_t n) {
    return dot_generic<float, float (*)(float), uint16_t, float (*)(uint16_t)>(a, identity, b, half_to_float, n);
}

void axpy_f32(float alpha, const float* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void axpy_f16(float alpha, const uint16_t* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] += alpha * fp16_to_fp32(x[i]);
}

void convert_f32_to_f16(const float* x, uint16_t* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void convert_f16_to_f32(const uint16_t* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void convert_f32_to_bf16(const float* x, uint16_t* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

void convert_bf16_to_f32(const uint16_t* x, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

void rms_norm(const float* x, const float* w, float eps, float* y, size_t n) {
    const float sum_of_squares = dot_f32(x, x, n);
    const float scale = 1.f / std::sqrt(sum_of_squares / static_cast<float>(n) + eps);
    for (size_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void swiglu(const float* g, const float* u, float* y, size_t n) {
    for (size_t i = 0; i < n; ++i) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

constexpr KernelTable kScalarTable = {
    .name = "scalar",
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
    .exp_f32 = exp_f32_scalar,
    .attention = attention_scalar,
    .stream_read_sum = stream_read_sum_scalar,
    .stream_copy = stream_copy_scalar,
    .stream_triad = stream_triad_scalar,
};

}  // namespace

const KernelTable* scalar_kernel_table() { return &kScalarTable; }

}  // namespace assistd::engine::kernels
