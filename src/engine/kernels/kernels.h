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

// y[i] = exp(x[i]), within ~1e-6 relative for x in [-87, 88]; 0 below -87.3
// (and for -inf), exp(88) above 88.
void exp_f32(const float* x, float* y, size_t n);

// Streams of the memory-bandwidth probe (`assistd bench membw`), each pass
// touching every byte once with the widest loads of the tier: the sum of n
// 64-bit words (mod 2^64; a checksum that proves every word was read),
// c[i] = a[i], and a[i] = b[i] + s * c[i] over n floats.
uint64_t stream_read_sum(const uint64_t* p, size_t n);
void stream_copy(const float* a, float* c, size_t n);
void stream_triad(float* a, const float* b, const float* c, float s, size_t n);

// Causal attention of a block of consecutive query tokens of one sequence,
// for the query heads that share one KV head (a GQA group), over that
// sequence's cached K and V. Query token i sits at position first_pos + i and
// attends to positions [0, first_pos + i]; the cache must hold K and V up to
// first_pos + n_queries - 1. Online softmax over KV tiles: each K/V row is
// loaded and converted once per call, for all n_queries * n_group query rows.
struct AttentionArgs {
    // Query g of token i: q + i * q_token_stride + g * head_dim (n_group heads side by side).
    const float* q = nullptr;
    size_t q_token_stride = 0;
    size_t n_queries = 0;
    size_t n_group = 0;
    size_t head_dim = 0;
    size_t first_pos = 0;
    float scale = 1.f;  // applied to q.k
    // K (V) of position j: k_blocks[j / block_tokens] + (j % block_tokens) * kv_row_bytes,
    // head_dim elements of kv_type (F16 or F32).
    const void* const* k_blocks = nullptr;
    const void* const* v_blocks = nullptr;
    size_t block_tokens = 0;
    size_t kv_row_bytes = 0;
    DType kv_type = DType::F32;
    // Output rows laid out as q's.
    float* out = nullptr;
    size_t out_token_stride = 0;
    // attention_scratch_floats(n_queries * n_group, head_dim) floats, 64-byte aligned, per concurrent call.
    float* scratch = nullptr;
    // Optional split of the keys: only positions in [kv_begin, kv_end) are
    // seen (with the causal limit). With row_max/row_sum set, each query row's
    // softmax max and sum over those positions are stored at
    // [i * row_state_token_stride + g], so results over disjoint ranges can be
    // merged: out = sum_s w_s out_s / sum_s w_s, w_s = sum_s * exp(max_s - max).
    // A row that sees no position gets output 0, sum 0 and max -inf.
    size_t kv_begin = 0;
    size_t kv_end = static_cast<size_t>(-1);
    float* row_max = nullptr;
    float* row_sum = nullptr;
    size_t row_state_token_stride = 0;
};
void attention(const AttentionArgs& args);
constexpr size_t kAttentionTileKeys = 64;  // keys per tile: a split range of whole tiles loads no tile twice
size_t attention_scratch_floats(size_t n_query_rows, size_t head_dim);

}  // namespace assistd::engine::kernels
