// The AVX-512 tier plus AVX512-BF16: BF16 weight x BF16 activation products
// with vdpbf16ps (pairs of bf16 multiplied and summed into fp32 lanes). Every
// other kernel is the plain AVX-512 tier's.
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
namespace {

__mmask32 low_lanes32(size_t n) { return n >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << n) - 1); }

__m512bh as_bf16_pairs(__m512i v) { return (__m512bh)v; }

__m512i load32(const uint16_t* p) { return _mm512_loadu_si512(p); }
__m512i load32_masked(const uint16_t* p, __mmask32 m) { return _mm512_maskz_loadu_epi16(m, p); }

// Row blocks ahead that a tile asks L2 for. Batched decode does as much
// arithmetic per weight byte as memory delivers, so the loads must be asked
// for long before the tile reaches them: one block ahead (into L1) arrives
// late, and later still when other work loads the memory.
constexpr size_t kFarPrefetchBlocks = 4;

// kFar: also prefetch into L2 kFarPrefetchBlocks row blocks ahead (only the
// first pass over a row block needs to; later passes find it in L1/L2).
template <int kRows, int kCols, bool kFar = false>
void bf16_tile(const uint16_t* w, size_t cols, const unsigned char* x, size_t x_row_bytes, float* y, size_t ldy,
               size_t row) {
    // With one activation row, a second accumulator set hides the dot-product
    // latency. A lone row (decode) streams with two as well: with four,
    // llama-1b decode read 37-41 GB/s against 50-51 with two, alternating,
    // the read probe 52-56 (four likely issue the loads so fast that they
    // crowd out the L2 prefetcher).
    constexpr int kUnroll = kCols == 1 ? 2 : 1;
    const uint16_t* w_rows[kRows];
    const uint16_t* x_rows[kCols];
    for (int i = 0; i < kRows; ++i) w_rows[i] = w + (row + i) * cols;
    for (int c = 0; c < kCols; ++c) x_rows[c] = reinterpret_cast<const uint16_t*>(x + c * x_row_bytes);

    __m512 acc[kUnroll][kRows][kCols];
    for (int u = 0; u < kUnroll; ++u)
        for (int i = 0; i < kRows; ++i)
            for (int c = 0; c < kCols; ++c) acc[u][i][c] = _mm512_setzero_ps();

    size_t k = 0;
    for (; k + 32 * kUnroll <= cols; k += 32 * kUnroll) {
        if constexpr (kRows == 4) {
            // The same columns of the next row block: four interleaved rows
            // defeat the hardware prefetcher, so ask for them a block ahead
            // (prefill +15% measured; prefetches past the matrix are harmless).
            for (int i = 0; i < kRows; ++i)
                _mm_prefetch(reinterpret_cast<const char*>(w_rows[i] + kRows * cols + k), _MM_HINT_T0);
            if constexpr (kFar) {
                for (int i = 0; i < kRows; ++i)
                    _mm_prefetch(reinterpret_cast<const char*>(w_rows[i] + kFarPrefetchBlocks * kRows * cols + k),
                                 _MM_HINT_T1);
            }
        }
        for (int u = 0; u < kUnroll; ++u) {
            __m512i xv[kCols];
            for (int c = 0; c < kCols; ++c) xv[c] = load32(x_rows[c] + k + 32 * u);
            for (int i = 0; i < kRows; ++i) {
                const __m512bh wv = as_bf16_pairs(load32(w_rows[i] + k + 32 * u));
                for (int c = 0; c < kCols; ++c) {
                    acc[u][i][c] = _mm512_dpbf16_ps(acc[u][i][c], wv, as_bf16_pairs(xv[c]));
                }
            }
        }
    }
    for (; k < cols; k += 32) {
        const __mmask32 m = low_lanes32(cols - k);
        __m512i xv[kCols];
        for (int c = 0; c < kCols; ++c) xv[c] = load32_masked(x_rows[c] + k, m);
        for (int i = 0; i < kRows; ++i) {
            const __m512bh wv = as_bf16_pairs(load32_masked(w_rows[i] + k, m));
            for (int c = 0; c < kCols; ++c) acc[0][i][c] = _mm512_dpbf16_ps(acc[0][i][c], wv, as_bf16_pairs(xv[c]));
        }
    }
    for (int u = 1; u < kUnroll; ++u)
        for (int i = 0; i < kRows; ++i)
            for (int c = 0; c < kCols; ++c) acc[0][i][c] = _mm512_add_ps(acc[0][i][c], acc[u][i][c]);
    if constexpr (kRows == 4) {
        for (int c = 0; c < kCols; ++c)
            _mm_storeu_ps(y + c * ldy + row, reduce4_ps(acc[0][0][c], acc[0][1][c], acc[0][2][c], acc[0][3][c]));
    } else {
        for (int i = 0; i < kRows; ++i)
            for (int c = 0; c < kCols; ++c) y[c * ldy + row + i] = _mm512_reduce_add_ps(acc[0][i][c]);
    }
}

constexpr int kTileRows = 4;
constexpr int kTileCols = 4;

template <int kRows>
void bf16_row_block(const uint16_t* w, size_t cols, const unsigned char* x, size_t x_row_bytes, size_t nb, float* y,
                    size_t ldy, size_t row) {
    size_t b = 0;
    if constexpr (kRows == kTileRows) {
        if (nb >= kTileCols) {
            bf16_tile<kRows, kTileCols, true>(w, cols, x, x_row_bytes, y, ldy, row);
            b = kTileCols;
        }
    }
    for (; b + kTileCols <= nb; b += kTileCols) {
        bf16_tile<kRows, kTileCols>(w, cols, x + b * x_row_bytes, x_row_bytes, y + b * ldy, ldy, row);
    }
    const unsigned char* x_rest = x + b * x_row_bytes;
    float* y_rest = y + b * ldy;
    switch (nb - b) {
        case 3: bf16_tile<kRows, 3>(w, cols, x_rest, x_row_bytes, y_rest, ldy, row); break;
        case 2: bf16_tile<kRows, 2>(w, cols, x_rest, x_row_bytes, y_rest, ldy, row); break;
        case 1: bf16_tile<kRows, 1>(w, cols, x_rest, x_row_bytes, y_rest, ldy, row); break;
        default: break;
    }
}

void matmul_bf16(const void* w, size_t cols, const void* x, size_t x_row_bytes, size_t nb, float* y, size_t ldy,
                 size_t r0, size_t r1) {
    const auto* weights = static_cast<const uint16_t*>(w);
    const size_t chunk = batch_chunk_rows(x_row_bytes, kTileCols);
    for (size_t b0 = 0; b0 < nb; b0 += chunk) {
        const auto* x_bytes = static_cast<const unsigned char*>(x) + b0 * x_row_bytes;
        const size_t chunk_nb = nb - b0 < chunk ? nb - b0 : chunk;
        float* y_chunk = y + b0 * ldy;
        size_t r = r0;
        // Few activation rows: memory-bound, and the hardware prefetcher
        // streams one weight row at a time far better than four interleaved.
        const bool streaming = chunk_nb < kTileCols;
        for (; !streaming && r + kTileRows <= r1; r += kTileRows) {
            bf16_row_block<kTileRows>(weights, cols, x_bytes, x_row_bytes, chunk_nb, y_chunk, ldy, r);
        }
        for (; r < r1; ++r) bf16_row_block<1>(weights, cols, x_bytes, x_row_bytes, chunk_nb, y_chunk, ldy, r);
    }
}

KernelTable make_avx512bf16_table() {
    KernelTable table = *avx512_kernel_table();
    table.name = "avx512bf16";
    table.matmul_bf16 = matmul_bf16;
    return table;
}

}  // namespace

const KernelTable* avx512bf16_kernel_table() {
    static const KernelTable table = make_avx512bf16_table();
    return &table;
}

}  // namespace assistd::engine::kernels
