#pragma once
// Internal to the kernels: one table of function pointers per ISA tier, and
// the tier-independent parts (activation layouts, dispatch helpers) that take a
// table explicitly so tests can run every tier available on this CPU side by side.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "engine/dtype.h"
#include "engine/kernels/kernels.h"

namespace assistd::engine::kernels {

enum class Tier { kScalar, kAvx2, kAvx512, kAvx512Bf16 };

const char* tier_name(Tier tier);

// y[b * ldy + r] = sum_k W[r, k] * X[b, k] for r in [r0, r1), b in [0, nb).
// X rows are prepared activations `x_row_bytes` apart (see activation_row_bytes).
using MatmulFn = void (*)(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y,
                          size_t ldy, size_t r0, size_t r1);

struct KernelTable {
    const char* name;
    // Activations: F32 for F32 and F16 weights, BF16 for BF16, the Q8_0 layout below for Q8_0.
    MatmulFn matmul_f32;
    MatmulFn matmul_f16;
    MatmulFn matmul_bf16;
    MatmulFn matmul_q8_0;

    float (*dot_f32)(const float* a, const float* b, size_t n);
    float (*dot_f32_f16)(const float* a, const uint16_t* b, size_t n);
    void (*axpy_f32)(float alpha, const float* x, float* y, size_t n);
    void (*axpy_f16)(float alpha, const uint16_t* x, float* y, size_t n);
    void (*convert_f32_to_f16)(const float* x, uint16_t* y, size_t n);
    void (*convert_f16_to_f32)(const uint16_t* x, float* y, size_t n);
    void (*convert_f32_to_bf16)(const float* x, uint16_t* y, size_t n);
    void (*convert_bf16_to_f32)(const uint16_t* x, float* y, size_t n);
    void (*rms_norm)(const float* x, const float* w, float eps, float* y, size_t n);
    void (*swiglu)(const float* g, const float* u, float* y, size_t n);
    void (*exp_f32)(const float* x, float* y, size_t n);
    void (*attention)(const AttentionArgs& args);
    // The memory-bandwidth probe's streams (see kernels.h).
    uint64_t (*stream_read_sum)(const uint64_t* p, size_t n);
    void (*stream_copy)(const float* a, float* c, size_t n);
    void (*stream_triad)(float* a, const float* b, const float* c, float s, size_t n);
};

// The table of a tier, or nullptr when this CPU can not run it.
const KernelTable* kernel_table_for(Tier tier);
// Tiers this CPU runs, lowest first (honours ASSISTD_CPU).
std::vector<Tier> available_tiers();
// The tier the public functions use.
Tier active_tier_id();

// Per-tier tables (defined in kernels_<isa>.cpp); only call when the CPU has the ISA.
const KernelTable* scalar_kernel_table();
const KernelTable* avx2_kernel_table();
const KernelTable* avx512_kernel_table();
const KernelTable* avx512bf16_kernel_table();

// Per-tier attention and exp (attention_<isa>.cpp, one algorithm in attention_impl.h).
void attention_scalar(const AttentionArgs& args);
void attention_avx2(const AttentionArgs& args);
void attention_avx512(const AttentionArgs& args);
void exp_f32_scalar(const float* x, float* y, size_t n);
void exp_f32_avx2(const float* x, float* y, size_t n);
void exp_f32_avx512(const float* x, float* y, size_t n);

// Per-tier streaming kernels of the memory-bandwidth probe (stream_<isa>.cpp).
uint64_t stream_read_sum_scalar(const uint64_t* p, size_t n);
uint64_t stream_read_sum_avx2(const uint64_t* p, size_t n);
uint64_t stream_read_sum_avx512(const uint64_t* p, size_t n);
void stream_copy_scalar(const float* a, float* c, size_t n);
void stream_copy_avx2(const float* a, float* c, size_t n);
void stream_copy_avx512(const float* a, float* c, size_t n);
void stream_triad_scalar(float* a, const float* b, const float* c, float s, size_t n);
void stream_triad_avx2(float* a, const float* b, const float* c, float s, size_t n);
void stream_triad_avx512(float* a, const float* b, const float* c, float s, size_t n);

// Where the attention kernel keeps its state in the caller's scratch (in
// floats from the start; every section 64-byte aligned). Rows are query rows
// (n_queries * n_group), padded to kAttentionRowPad; head_dim is padded to 16.
constexpr size_t kAttentionTile = kAttentionTileKeys;
constexpr size_t kAttentionRowPad = 32;  // two vectors of the widest tier
struct AttentionScratchLayout {
    size_t rows_padded = 0, head_padded = 0;
    size_t q = 0, out = 0, max = 0, sum = 0, limit = 0, k = 0, v = 0, scores = 0, total = 0;
};
AttentionScratchLayout attention_scratch_layout(size_t n_query_rows, size_t head_dim);

// Prepared Q8_0 activation row of `cols` elements (cols a multiple of 32), three
// 64-byte aligned sections:
//   scales:      float d per 32-block (x ~= d * q)
//   corrections: int32 -16 * sum(q) per block; lets AVX-512 VNNI use (w + 128) as the
//                unsigned operand: each of a block's 8 dword lanes gets -16*sum(q),
//                8 * 16 = 128 cancels the bias.
//   quants:      int8 q per element
struct Q8ActivationLayout {
    size_t scales_offset = 0;
    size_t corrections_offset = 0;
    size_t quants_offset = 0;
    size_t row_bytes = 0;
};
constexpr size_t kActivationAlignment = 64;
constexpr size_t round_up_to_alignment(size_t bytes) {
    return (bytes + kActivationAlignment - 1) / kActivationAlignment * kActivationAlignment;
}
constexpr Q8ActivationLayout q8_activation_layout(size_t cols) {
    const size_t blocks = cols / kQ8_0Block;
    Q8ActivationLayout layout;
    layout.scales_offset = 0;
    layout.corrections_offset = round_up_to_alignment(blocks * sizeof(float));
    layout.quants_offset = layout.corrections_offset + round_up_to_alignment(blocks * sizeof(int32_t));
    layout.row_bytes = layout.quants_offset + round_up_to_alignment(cols);
    return layout;
}
// Batched matmuls walk the batch in chunks whose activation rows fit in L2
// (the weight rows of a tile are then read once per chunk, from DRAM or L3,
// while the activations come from L2). A multiple of `tile_cols`.
constexpr size_t kActivationChunkBytes = size_t{256} << 10;
constexpr size_t batch_chunk_rows(size_t x_row_bytes, size_t tile_cols) {
    const size_t rows = kActivationChunkBytes / x_row_bytes / tile_cols * tile_cols;
    return rows > tile_cols ? rows : tile_cols;
}

// Quantizes one float row into the layout above (the same code on every tier).
void prepare_q8_0_row(const float* x, size_t cols, void* out);

// The public operations with an explicit table (the public functions pass the active one).
void prepare_activations_with(const KernelTable& table, DType weight_type, const float* x, size_t ldx, size_t nb,
                              size_t cols, void* out);
void prepare_activation_columns_with(const KernelTable& table, DType weight_type, const float* x, size_t ldx,
                                     size_t nb, size_t cols, size_t c0, size_t c1, void* out);
void matmul_with(const KernelTable& table, DType weight_type, const void* w, size_t cols, const void* x_prepared,
                 size_t nb, float* y, size_t ldy, size_t r0, size_t r1);
void convert_rows_with(const KernelTable& table, DType src_type, const void* src, DType dst_type, void* dst,
                       size_t n_elements);

}  // namespace assistd::engine::kernels
