#pragma once
// Numeric kernels of the engine, chosen once at start-up for the CPU we run on
// (portable scalar, AVX2+F16C+FMA, AVX-512 with AVX512-BF16/VNNI where present).
// The model calls only these entry points; the per-ISA code lives in
// kernels_<isa>.cpp, each compiled with its own target flags.
//
// Layout: a weight matrix W has `rows` rows of `cols` elements (GGUF dims[0] is
// cols), row-major, in its storage type. Activations are float rows.
#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

namespace assistd::engine::kernels {

// Which implementation tier is active ("scalar", "avx2", "avx512", "avx512bf16").
const char* active_tier();

// The format a weight type's dot products want their activation rows in:
// F32 -> F32, F16 -> F16, BF16 -> BF16, Q8_0 -> Q8_0.
DType activation_type(DType weight_type);
// Bytes of one prepared activation row of `cols` elements (padded so rows stay 64-byte aligned).
size_t activation_row_bytes(DType weight_type, size_t cols);
// Converts nb float rows (stride ldx floats) into the prepared format, rows
// `activation_row_bytes` apart in `out`. `cols` is a multiple of the weight's block size.
void prepare_activations(DType weight_type, const float* x, size_t ldx, size_t nb, size_t cols, void* out);
// The columns [c0, c1) of the same prepared rows (the rest is left as is), so
// the threads that produce parts of a row can prepare their own parts. For
// Q8_0, c0 and c1 are multiples of its 32-element block.
void prepare_activation_columns(DType weight_type, const float* x, size_t ldx, size_t nb, size_t cols, size_t c0,
                                size_t c1, void* out);

// y[b * ldy + r] = sum_k W[r, k] * X[b, k]  for r in [r0, r1), b in [0, nb).
// `x_prepared` is the output of prepare_activations for the same weight type.
// FP32 accumulation. Safe to call concurrently on disjoint row ranges.
void matmul(DType weight_type, const void* w, size_t cols, const void* x_prepared, size_t nb, float* y,
            size_t ldy, size_t r0, size_t r1);

// Small vector helpers used by attention and the elementwise parts.
float dot_f32(const float* a, const float* b, size_t n);
float dot_f32_f16(const float* a, const uint16_t* b, size_t n);  // b in IEEE half
void axpy_f32(float alpha, const float* x, float* y, size_t n);   // y += alpha * x
void axpy_f16(float alpha, const uint16_t* x, float* y, size_t n);
void convert_f32_to_f16(const float* x, uint16_t* y, size_t n);
void convert_f16_to_f32(const uint16_t* x, float* y, size_t n);
// y = x * w / sqrt(mean(x^2) + eps)
void rms_norm(const float* x, const float* w, float eps, float* y, size_t n);
// y[i] = silu(g[i]) * u[i]
void swiglu(const float* g, const float* u, float* y, size_t n);
// Converts a weight row range to another storage type (for run-time precision switching).
void convert_rows(DType src_type, const void* src, DType dst_type, void* dst, size_t n_elements);

}  // namespace assistd::engine::kernels
