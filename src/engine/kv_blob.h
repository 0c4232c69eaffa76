#pragma once
// A sequence's computed context as bytes that a node keeps on disk or sends to
// a peer: the K and V of a run of positions, the token ids at those positions
// and the fingerprint of the model and KV format that computed them. A blob of
// another model, KV type or RoPE setting, or a damaged or truncated one, is
// refused with the reason, never used.
//
//   blob = "AKV1" | u32 version (1) | u64 fingerprint | u32 kv dtype |
//          u32 n_layer | u32 n_head_kv | u32 head_dim | u64 first position |
//          u64 count | count x u32 token ids |
//          per layer: count K rows, then count V rows (a row: n_head_kv x head_dim
//          elements of the dtype) | u64 checksum of every byte before it
//   (little-endian)
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/dtype.h"
#include "engine/tokenizer.h"

namespace assistd::engine {

class GgufFile;
class KvCache;
struct ModelInfo;

// What a blob says about itself once its checksum and sizes hold.
struct KvBlobView {
    uint64_t fingerprint = 0;
    DType type = DType::F16;
    size_t n_layer = 0, n_head_kv = 0, head_dim = 0;
    size_t first = 0;                      // the position of its first token
    std::vector<TokenId> tokens;           // the token ids of its positions
    std::string_view rows;                 // the K and V rows, laid out as above
};

// The model and KV format a blob is valid for: the architecture, its shapes,
// RoPE (theta, scaling, style), the norm epsilon, the KV type, and a sample of
// every tensor's bytes (so two random-weight files of one shape differ).
uint64_t kv_fingerprint(const GgufFile& file, const ModelInfo& info, DType kv_type);

// Positions [begin, end) of `seq`; `tokens` are their ids (end - begin of them).
Result<std::string> encode_kv_blob(KvCache& kv, int32_t seq, size_t begin, size_t end,
                                   std::span<const TokenId> tokens, uint64_t fingerprint);
// Checks magic, version, sizes and checksum (not whether it fits a model).
Result<KvBlobView> parse_kv_blob(std::string_view blob);
// The bytes of a blob's header and token ids, from its header alone.
inline constexpr size_t kKvBlobHeaderBytes = 48;
Result<size_t> kv_blob_prefix_bytes(std::string_view header);
// Reads the header and token ids from a blob's first kv_blob_prefix_bytes
// bytes, without the rows or the checksum (an index of blobs on disk); the
// returned view's rows are empty.
Result<KvBlobView> parse_kv_blob_prefix(std::string_view prefix);
// Appends the blob's positions to `seq`, whose length must be the blob's first
// position, after checking it was made for this model (`fingerprint`) and this
// cache's KV type and shape. On an error nothing is written.
Status append_kv_blob(KvCache& kv, int32_t seq, const KvBlobView& blob, uint64_t fingerprint);

}  // namespace assistd::engine
