#pragma once
// The attention kernel's algorithm, written once over a tier's vector type and
// instantiated by attention_<isa>.cpp, each compiled with its own ISA flags.
// Every template here takes the tier's vector traits, which have internal
// linkage, so each tier gets its own copies (no ODR mixing of ISA code).
//
// The traits `Vec` provide: type T of W float lanes; zero, set1, load, store,
// fma(a, b, c) = a * b + c, mul, sub, max, reduce_add, reduce_max, exp (0 for
// -inf), mask_greater(s, pos, limit) (-inf where pos > limit), convert_f16
// (n halves to floats), and the register blocks kPositionBlock and kDimBlock.
//
// Two schedules over the same tiles and online softmax (running max m, sum l):
//  - rows: query rows in vector lanes. Scores of a tile are S^T = K . Q^T with
//    one broadcast K element times a vector of rows, and O^T += V^T . P^T the
//    same way; no horizontal sums, no transposes of K or V. For prefill,
//    where a call has many query rows.
//  - dot: head dimension in vector lanes, one query row at a time. For decode,
//    where a call has a few rows (one token times its GQA group) and vectors
//    of rows would be mostly empty.
#include <algorithm>
#include <cstring>
#include <limits>

#include "engine/dtype.h"
#include "engine/kernels/kernels.h"
#include "engine/kernels/kernels_impl.h"

namespace assistd::engine::kernels::attention_detail {

// Converts the K and V rows of positions [j0, j0 + n) to float rows `dims`
// apart (zero beyond head_dim), and zeroes rows [n, n_padded). The rows are
// scattered (strided by the other heads, blocks anywhere): with nothing else
// to do per row in decode, the loads wait on memory unless prefetched.
template <typename Vec>
void load_tile(const AttentionArgs& a, size_t j0, size_t n, size_t n_padded, size_t dims,
               size_t kv_end, float* k, float* v) {
    constexpr size_t kPrefetchAhead = 8;  // positions
    const size_t hd = a.head_dim;
    const size_t row_bytes = hd * (a.kv_type == DType::F16 ? 2 : 4);
    auto row = [&](const void* const* blocks, size_t pos) {
        return static_cast<const unsigned char*>(blocks[pos / a.block_tokens]) +
               (pos % a.block_tokens) * a.kv_row_bytes;
    };
    for (size_t j = 0; j < n; ++j) {
        const size_t pos = j0 + j;
        if (pos + kPrefetchAhead < kv_end) {
            const unsigned char* kp = row(a.k_blocks, pos + kPrefetchAhead);
            const unsigned char* vp = row(a.v_blocks, pos + kPrefetchAhead);
            for (size_t b = 0; b < row_bytes; b += 64) {
                __builtin_prefetch(kp + b);
                __builtin_prefetch(vp + b);
            }
        }
        const unsigned char* ksrc = row(a.k_blocks, pos);
        const unsigned char* vsrc = row(a.v_blocks, pos);
        float* kd = k + j * dims;
        float* vd = v + j * dims;
        if (a.kv_type == DType::F16) {
            Vec::convert_f16(reinterpret_cast<const uint16_t*>(ksrc), kd, hd);
            Vec::convert_f16(reinterpret_cast<const uint16_t*>(vsrc), vd, hd);
        } else {
            std::memcpy(kd, ksrc, hd * sizeof(float));
            std::memcpy(vd, vsrc, hd * sizeof(float));
        }
        for (size_t d = hd; d < dims; ++d) kd[d] = vd[d] = 0.f;
    }
    if (n_padded > n) {
        std::memset(k + n * dims, 0, (n_padded - n) * dims * sizeof(float));
        std::memset(v + n * dims, 0, (n_padded - n) * dims * sizeof(float));
    }
}

// Query row r is token r / n_group, head r % n_group.
inline const float* query_row(const AttentionArgs& a, size_t r) {
    return a.q + (r / a.n_group) * a.q_token_stride + (r % a.n_group) * a.head_dim;
}
inline float* output_row(const AttentionArgs& a, size_t r) {
    return a.out + (r / a.n_group) * a.out_token_stride + (r % a.n_group) * a.head_dim;
}
// The keys a call sees: [kv_begin, kv_end) within the causal range.
inline size_t keys_end(const AttentionArgs& a) {
    return std::min(a.kv_end, a.first_pos + a.n_queries);
}

// Writes row r's output (accumulated o, `stride` floats between dimensions)
// and, when asked, its softmax state.
inline void finish_row(const AttentionArgs& a, size_t r, const float* o, size_t stride, float m,
                       float l) {
    float* out = output_row(a, r);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (size_t d = 0; d < a.head_dim; ++d) out[d] = o[d * stride] * inv;
    if (a.row_max) {
        const size_t at = (r / a.n_group) * a.row_state_token_stride + r % a.n_group;
        a.row_max[at] = l > 0.f ? m : -std::numeric_limits<float>::infinity();
        a.row_sum[at] = l;
    }
}

// ---- Rows in lanes ---------------------------------------------------------

// Two row vectors at a time (kAttentionRowPad is two vectors of the widest tier).
constexpr size_t kRowVectors = 2;

// S^T[j][rows] for tile positions [0, n_padded) and the row vectors [rv, rv + 2).
template <typename Vec>
void rows_scores(const float* qt, size_t row_stride, const float* k, size_t dims, size_t hd,
                 size_t n_padded, float* s, size_t rv) {
    using T = typename Vec::T;
    constexpr size_t W = Vec::W, PB = Vec::kPositionBlock;
    for (size_t j = 0; j < n_padded; j += PB) {
        T acc[PB][kRowVectors];
        for (size_t p = 0; p < PB; ++p)
            for (size_t b = 0; b < kRowVectors; ++b) acc[p][b] = Vec::zero();
        for (size_t d = 0; d < hd; ++d) {
            T qv[kRowVectors];
            for (size_t b = 0; b < kRowVectors; ++b)
                qv[b] = Vec::load(qt + d * row_stride + (rv + b) * W);
            for (size_t p = 0; p < PB; ++p) {
                const T kv = Vec::set1(k[(j + p) * dims + d]);
                for (size_t b = 0; b < kRowVectors; ++b) acc[p][b] = Vec::fma(qv[b], kv, acc[p][b]);
            }
        }
        for (size_t p = 0; p < PB; ++p)
            for (size_t b = 0; b < kRowVectors; ++b)
                Vec::store(s + (j + p) * row_stride + (rv + b) * W, acc[p][b]);
    }
}

// O^T[d][rows] += sum_j P^T[j][rows] * V[j][d] for d in [d0, d0 + DB).
template <typename Vec, size_t DB>
void rows_accumulate(const float* s, size_t row_stride, const float* v, size_t dims, size_t n,
                     float* ot, size_t d0, size_t rv) {
    using T = typename Vec::T;
    constexpr size_t W = Vec::W;
    T acc[DB][kRowVectors];
    for (size_t dd = 0; dd < DB; ++dd)
        for (size_t b = 0; b < kRowVectors; ++b)
            acc[dd][b] = Vec::load(ot + (d0 + dd) * row_stride + (rv + b) * W);
    for (size_t j = 0; j < n; ++j) {
        T pv[kRowVectors];
        for (size_t b = 0; b < kRowVectors; ++b)
            pv[b] = Vec::load(s + j * row_stride + (rv + b) * W);
        for (size_t dd = 0; dd < DB; ++dd) {
            const T vv = Vec::set1(v[j * dims + d0 + dd]);
            for (size_t b = 0; b < kRowVectors; ++b) acc[dd][b] = Vec::fma(pv[b], vv, acc[dd][b]);
        }
    }
    for (size_t dd = 0; dd < DB; ++dd)
        for (size_t b = 0; b < kRowVectors; ++b)
            Vec::store(ot + (d0 + dd) * row_stride + (rv + b) * W, acc[dd][b]);
}

template <typename Vec>
void attention_rows(const AttentionArgs& a, const AttentionScratchLayout& L) {
    using T = typename Vec::T;
    constexpr size_t W = Vec::W, PB = Vec::kPositionBlock, DB = Vec::kDimBlock;
    static_assert(kAttentionRowPad % (kRowVectors * W) == 0 && kAttentionTile % PB == 0);
    const size_t hd = a.head_dim, dims = L.head_padded;
    const size_t rows = a.n_queries * a.n_group, stride = L.rows_padded;
    const size_t n_row_vectors = (rows + W - 1) / W;
    const size_t n_blocks = (n_row_vectors + kRowVectors - 1) / kRowVectors;
    float* qt = a.scratch + L.q;
    float* ot = a.scratch + L.out;
    float* m = a.scratch + L.max;
    float* l = a.scratch + L.sum;
    float* limit = a.scratch + L.limit;
    float* k = a.scratch + L.k;
    float* v = a.scratch + L.v;
    float* s = a.scratch + L.scores;

    // Q^T scaled, O^T and the softmax state; padding rows repeat the last row's limit.
    std::memset(qt, 0, hd * stride * sizeof(float));
    std::memset(ot, 0, hd * stride * sizeof(float));
    for (size_t r = 0; r < rows; ++r) {
        const float* q = query_row(a, r);
        for (size_t d = 0; d < hd; ++d) qt[d * stride + r] = q[d] * a.scale;
    }
    for (size_t r = 0; r < stride; ++r) {
        m[r] = -std::numeric_limits<float>::infinity();
        l[r] = 0.f;
        limit[r] = static_cast<float>(a.first_pos + std::min(r, rows - 1) / a.n_group);
    }

    const size_t kv_end = keys_end(a);
    for (size_t j0 = a.kv_begin; j0 < kv_end; j0 += kAttentionTile) {
        const size_t n = std::min(kAttentionTile, kv_end - j0);
        const size_t n_padded = (n + PB - 1) / PB * PB;
        load_tile<Vec>(a, j0, n, n_padded, dims, kv_end, k, v);
        for (size_t block = 0; block < n_blocks; ++block) {
            const size_t rv = block * kRowVectors;
            const size_t first_row = rv * W;
            const size_t last_row = std::min(rows, first_row + kRowVectors * W) - 1;
            // Rows are token-major, so positions grow with the row index.
            if (static_cast<float>(j0) > limit[last_row]) continue;
            const bool masked =
                j0 + n_padded > kv_end || static_cast<float>(j0 + n_padded - 1) > limit[first_row];
            rows_scores<Vec>(qt, stride, k, dims, hd, n_padded, s, rv);
            for (size_t b = 0; b < kRowVectors; ++b) {
                const size_t col = (rv + b) * W;
                const T lim = Vec::load(limit + col);
                const T minus_one = Vec::set1(-1.f);  // masks the tile's padding
                T tile_max = Vec::set1(-std::numeric_limits<float>::infinity());
                for (size_t j = 0; j < n_padded; ++j) {
                    T sv = Vec::load(s + j * stride + col);
                    if (masked) {
                        sv = Vec::mask_greater(sv, Vec::set1(static_cast<float>(j0 + j)),
                                               j0 + j < kv_end ? lim : minus_one);
                        Vec::store(s + j * stride + col, sv);
                    }
                    tile_max = Vec::max(tile_max, sv);
                }
                const T m_old = Vec::load(m + col);
                // Finite even for a row that has seen no key yet (a split
                // range may start past its position): exp(-inf - lowest) = 0.
                const T m_new = Vec::max(Vec::max(m_old, tile_max),
                                         Vec::set1(std::numeric_limits<float>::lowest()));
                const T correction = Vec::exp(Vec::sub(m_old, m_new));
                T sum = Vec::zero();
                for (size_t j = 0; j < n_padded; ++j) {
                    const T p = Vec::exp(Vec::sub(Vec::load(s + j * stride + col), m_new));
                    Vec::store(s + j * stride + col, p);
                    sum = Vec::add(sum, p);
                }
                Vec::store(m + col, m_new);
                Vec::store(l + col, Vec::fma(Vec::load(l + col), correction, sum));
                for (size_t d = 0; d < hd; ++d)
                    Vec::store(ot + d * stride + col,
                               Vec::mul(Vec::load(ot + d * stride + col), correction));
            }
            size_t d0 = 0;
            for (; d0 + DB <= hd; d0 += DB)
                rows_accumulate<Vec, DB>(s, stride, v, dims, n, ot, d0, rv);
            for (; d0 < hd; ++d0) rows_accumulate<Vec, 1>(s, stride, v, dims, n, ot, d0, rv);
        }
    }
    for (size_t r = 0; r < rows; ++r) finish_row(a, r, ot + r, stride, m[r], l[r]);
}

// ---- Head dimension in lanes -----------------------------------------------

// o[0, NV*W) = o * correction + sum_j p[j] * v[j] over the row's valid positions.
template <typename Vec, size_t NV>
void dot_accumulate(const float* p, size_t n, const float* v, size_t dims, float correction,
                    float* o) {
    using T = typename Vec::T;
    constexpr size_t W = Vec::W;
    const T c = Vec::set1(correction);
    T acc[NV];
    for (size_t i = 0; i < NV; ++i) acc[i] = Vec::mul(Vec::load(o + i * W), c);
    for (size_t j = 0; j < n; ++j) {
        const T pj = Vec::set1(p[j]);
        for (size_t i = 0; i < NV; ++i)
            acc[i] = Vec::fma(pj, Vec::load(v + j * dims + i * W), acc[i]);
    }
    for (size_t i = 0; i < NV; ++i) Vec::store(o + i * W, acc[i]);
}

template <typename Vec>
void attention_dot(const AttentionArgs& a, const AttentionScratchLayout& L) {
    using T = typename Vec::T;
    constexpr size_t W = Vec::W;
    constexpr float kNegativeInfinity = -std::numeric_limits<float>::infinity();
    const size_t hd = a.head_dim, dims = L.head_padded;
    static_assert(16 % W == 0, "the head dimension is padded to 16 floats");
    const size_t nv = dims / W;
    const size_t rows = a.n_queries * a.n_group;
    float* qs = a.scratch + L.q;
    float* os = a.scratch + L.out;
    float* m = a.scratch + L.max;
    float* l = a.scratch + L.sum;
    float* k = a.scratch + L.k;
    float* v = a.scratch + L.v;
    float* s = a.scratch + L.scores;

    for (size_t r = 0; r < rows; ++r) {
        const float* q = query_row(a, r);
        for (size_t d = 0; d < dims; ++d) qs[r * dims + d] = d < hd ? q[d] * a.scale : 0.f;
        std::memset(os + r * dims, 0, dims * sizeof(float));
        m[r] = kNegativeInfinity;
        l[r] = 0.f;
    }
    const size_t kv_end = keys_end(a);
    for (size_t j0 = a.kv_begin; j0 < kv_end; j0 += kAttentionTile) {
        const size_t n = std::min(kAttentionTile, kv_end - j0);
        load_tile<Vec>(a, j0, n, n, dims, kv_end, k, v);
        for (size_t r = 0; r < rows; ++r) {
            const size_t pos = a.first_pos + r / a.n_group;
            if (j0 > pos) continue;  // this row sees none of the tile
            const size_t valid = std::min(n, pos + 1 - j0);
            const float* q = qs + r * dims;
            float tile_max = kNegativeInfinity;
            for (size_t j = 0; j < valid; ++j) {
                T acc = Vec::mul(Vec::load(q), Vec::load(k + j * dims));
                for (size_t i = 1; i < nv; ++i)
                    acc = Vec::fma(Vec::load(q + i * W), Vec::load(k + j * dims + i * W), acc);
                s[j] = Vec::reduce_add(acc);
                tile_max = std::max(tile_max, s[j]);
            }
            const size_t valid_padded = (valid + W - 1) / W * W;
            for (size_t j = valid; j < valid_padded; ++j) s[j] = kNegativeInfinity;
            const float m_new = std::max(m[r], tile_max);
            const T m_vec = Vec::set1(m_new);
            T sum = Vec::zero();
            for (size_t j = 0; j < valid_padded; j += W) {
                const T p = Vec::exp(Vec::sub(Vec::load(s + j), m_vec));
                Vec::store(s + j, p);
                sum = Vec::add(sum, p);
            }
            const float correction = Vec::first(Vec::exp(Vec::set1(m[r] - m_new)));
            m[r] = m_new;
            l[r] = l[r] * correction + Vec::reduce_add(sum);
            // Up to four vectors of the head held in registers per pass over the tile.
            float* o = os + r * dims;
            for (size_t i = 0; i < nv;) {
                const size_t chunk = std::min<size_t>(4, nv - i);
                const float* vi = v + i * W;
                switch (chunk) {
                    case 4:
                        dot_accumulate<Vec, 4>(s, valid, vi, dims, correction, o + i * W);
                        break;
                    case 3:
                        dot_accumulate<Vec, 3>(s, valid, vi, dims, correction, o + i * W);
                        break;
                    case 2:
                        dot_accumulate<Vec, 2>(s, valid, vi, dims, correction, o + i * W);
                        break;
                    default:
                        dot_accumulate<Vec, 1>(s, valid, vi, dims, correction, o + i * W);
                        break;
                }
                i += chunk;
            }
        }
    }
    for (size_t r = 0; r < rows; ++r) finish_row(a, r, os + r * dims, 1, m[r], l[r]);
}

template <typename Vec>
void attention(const AttentionArgs& a) {
    const size_t rows = a.n_queries * a.n_group;
    if (rows == 0) return;
    const AttentionScratchLayout layout = attention_scratch_layout(rows, a.head_dim);
    // Vectors of rows pay off once they are at least half full.
    if (2 * rows >= Vec::W) {
        attention_rows<Vec>(a, layout);
    } else {
        attention_dot<Vec>(a, layout);
    }
}

// y = exp(x) through the tier's vector exp (the tail through a padded vector).
template <typename Vec>
void exp_array(const float* x, float* y, size_t n) {
    constexpr size_t W = Vec::W;
    size_t i = 0;
    for (; i + W <= n; i += W) Vec::store(y + i, Vec::exp(Vec::load(x + i)));
    if (i < n) {
        float in[W] = {}, out[W];
        std::memcpy(in, x + i, (n - i) * sizeof(float));
        Vec::store(out, Vec::exp(Vec::load(in)));
        std::memcpy(y + i, out, (n - i) * sizeof(float));
    }
}

}  // namespace assistd::engine::kernels::attention_detail
