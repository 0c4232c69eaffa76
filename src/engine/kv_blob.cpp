#include "engine/kv_blob.h"

#include "common/little_endian.h"

#include <fmt/format.h>

#include <cstring>

#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/kv_cache.h"

namespace assistd::engine {
namespace {

constexpr char kMagic[4] = {'A', 'K', 'V', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 4 + 4 + 8 + 4 + 4 + 4 + 4 + 8 + 8;
static_assert(kHeaderBytes == kKvBlobHeaderBytes);

uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

// A 64-bit checksum at memory speed: four independent lanes of multiply-rotate
// over 8-byte words, folded and mixed at the end (damage, not attacks: peers
// are authenticated; this finds torn writes and flipped bits).
uint64_t checksum(std::string_view bytes) {
    constexpr uint64_t kPrime = 0x9e3779b97f4a7c15ull;
    uint64_t lane[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
    const char* p = bytes.data();
    size_t n = bytes.size();
    while (n >= 32) {
        for (int i = 0; i < 4; ++i) {
            uint64_t w;
            std::memcpy(&w, p + 8 * i, 8);
            lane[i] = (lane[i] ^ w) * kPrime;
            lane[i] = (lane[i] << 31) | (lane[i] >> 33);
        }
        p += 32;
        n -= 32;
    }
    uint64_t h = bytes.size();
    for (int i = 0; i < 4; ++i) h = mix(h ^ lane[i]);
    for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<uint8_t>(p[i])) * kPrime;
    return mix(h);
}

void hash_bytes(uint64_t& h, const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
}
template <typename T>
void hash_value(uint64_t& h, const T& v) {
    hash_bytes(h, &v, sizeof v);
}

size_t element_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

}  // namespace

uint64_t kv_fingerprint(const GgufFile& file, const ModelInfo& info, DType kv_type) {
    uint64_t h = 0xcbf29ce484222325ull;
    hash_bytes(h, info.arch_name.data(), info.arch_name.size());
    for (size_t v : {info.n_vocab, info.n_embd, info.n_layer, info.n_head, info.n_head_kv, info.n_ff, info.head_dim,
                     info.n_rot})
        hash_value(h, static_cast<uint64_t>(v));
    hash_value(h, info.rope_theta);
    hash_value(h, info.rope_freq_scale);
    hash_value(h, info.rope_neox);
    hash_value(h, info.rms_eps);
    hash_value(h, static_cast<uint32_t>(kv_type));
    // Every tensor's name, type and shape, and 3 x 64 bytes of its data: weights
    // that differ anywhere in practice differ in these (a fine-tune changes every row).
    for (const auto& t : file.tensors()) {
        hash_bytes(h, t.name.data(), t.name.size());
        hash_value(h, t.ggml_type);
        for (uint64_t d : t.dims) hash_value(h, d);
        const auto* data = static_cast<const uint8_t*>(t.data);
        if (!data || t.n_bytes == 0) continue;
        const size_t take = std::min<size_t>(64, t.n_bytes);
        for (size_t at : {size_t{0}, (t.n_bytes - take) / 2, t.n_bytes - take}) hash_bytes(h, data + at, take);
    }
    return mix(h);
}

Result<std::string> encode_kv_blob(KvCache& kv, int32_t seq, size_t begin, size_t end,
                                   std::span<const TokenId> tokens, uint64_t fingerprint) {
    if (!kv.valid(seq)) return make_error(ErrorCode::kInvalidArgument, fmt::format("unknown sequence {}", seq));
    if (begin > end || end > kv.length(seq))
        return make_error(ErrorCode::kOutOfRange, fmt::format("positions [{}, {}) of a sequence holding {}", begin,
                                                              end, kv.length(seq)));
    if (tokens.size() != end - begin)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{} token ids for {} positions", tokens.size(), end - begin));
    const auto& s = kv.shape();
    const size_t count = end - begin;
    const size_t row = kv.row_bytes();
    std::string out;
    out.reserve(kHeaderBytes + 4 * count + 2 * s.n_layer * count * row + 8);
    out.append(kMagic, 4);
    put_le32(out, kVersion);
    put_le64(out, fingerprint);
    put_le32(out, static_cast<uint32_t>(s.type));
    put_le32(out, static_cast<uint32_t>(s.n_layer));
    put_le32(out, static_cast<uint32_t>(s.n_head_kv));
    put_le32(out, static_cast<uint32_t>(s.head_dim));
    put_le64(out, begin);
    put_le64(out, count);
    for (TokenId t : tokens) put_le32(out, static_cast<uint32_t>(t));
    for (size_t layer = 0; layer < s.n_layer; ++layer) {
        for (size_t pos = begin; pos < end; ++pos) out.append(reinterpret_cast<const char*>(kv.k_at(seq, layer, pos)), row);
        for (size_t pos = begin; pos < end; ++pos) out.append(reinterpret_cast<const char*>(kv.v_at(seq, layer, pos)), row);
    }
    put_le64(out, checksum(out));
    return out;
}

Result<KvBlobView> parse_kv_blob(std::string_view blob) {
    auto bad = [](const std::string& why) { return make_error(ErrorCode::kCorrupt, "KV blob: " + why); };
    if (blob.size() < kHeaderBytes + 8) return bad(fmt::format("{} bytes is shorter than its header", blob.size()));
    if (std::memcmp(blob.data(), kMagic, 4) != 0) return bad("not a KV blob (no AKV1 magic)");
    const char* p = blob.data();
    if (get_le32(p + 4) != kVersion)
        return make_error(ErrorCode::kUnsupported, fmt::format("KV blob: version {} (this build reads 1)", get_le32(p + 4)));
    KvBlobView v;
    v.fingerprint = get_le64(p + 8);
    const uint32_t type = get_le32(p + 16);
    if (type != static_cast<uint32_t>(DType::F16) && type != static_cast<uint32_t>(DType::F32))
        return bad(fmt::format("KV type {} is neither f16 nor f32", type));
    v.type = static_cast<DType>(type);
    v.n_layer = get_le32(p + 20);
    v.n_head_kv = get_le32(p + 24);
    v.head_dim = get_le32(p + 28);
    v.first = get_le64(p + 32);
    const uint64_t count = get_le64(p + 40);
    // Sizes first, in 128-bit-safe steps: a forged count must not overflow into a small total.
    const uint64_t row = static_cast<uint64_t>(v.n_head_kv) * v.head_dim * element_bytes(v.type);
    if (v.n_layer == 0 || v.n_layer > 4096 || row == 0 || row > (uint64_t{1} << 24) || count > (uint64_t{1} << 24))
        return bad("absurd shape or count");
    const unsigned __int128 expected = static_cast<unsigned __int128>(kHeaderBytes) + 4 * count +
                                       static_cast<unsigned __int128>(2) * v.n_layer * count * row + 8;
    if (expected != blob.size())
        return bad(fmt::format("{} bytes where its header implies {} (truncated or padded)", blob.size(),
                               static_cast<uint64_t>(expected)));
    const uint64_t stored = get_le64(p + blob.size() - 8);
    if (checksum(blob.substr(0, blob.size() - 8)) != stored) return bad("checksum mismatch (damaged)");
    v.tokens.reserve(count);
    for (uint64_t i = 0; i < count; ++i) v.tokens.push_back(static_cast<TokenId>(get_le32(p + kHeaderBytes + 4 * i)));
    v.rows = blob.substr(kHeaderBytes + 4 * count, blob.size() - 8 - kHeaderBytes - 4 * count);
    return v;
}

Result<size_t> kv_blob_prefix_bytes(std::string_view header) {
    if (header.size() < kHeaderBytes || std::memcmp(header.data(), kMagic, 4) != 0)
        return make_error(ErrorCode::kCorrupt, "KV blob: no AKV1 header");
    const uint64_t count = get_le64(header.data() + 40);
    if (count > (uint64_t{1} << 24)) return make_error(ErrorCode::kCorrupt, "KV blob: absurd count");
    return kHeaderBytes + 4 * static_cast<size_t>(count);
}

Result<KvBlobView> parse_kv_blob_prefix(std::string_view prefix) {
    auto need = kv_blob_prefix_bytes(prefix);
    if (!need) return need.error();
    if (prefix.size() < *need) return make_error(ErrorCode::kCorrupt, "KV blob: truncated token ids");
    const char* p = prefix.data();
    if (get_le32(p + 4) != kVersion)
        return make_error(ErrorCode::kUnsupported, fmt::format("KV blob: version {} (this build reads 1)", get_le32(p + 4)));
    KvBlobView v;
    v.fingerprint = get_le64(p + 8);
    v.type = static_cast<DType>(get_le32(p + 16));
    v.n_layer = get_le32(p + 20);
    v.n_head_kv = get_le32(p + 24);
    v.head_dim = get_le32(p + 28);
    v.first = get_le64(p + 32);
    const uint64_t count = get_le64(p + 40);
    v.tokens.reserve(count);
    for (uint64_t i = 0; i < count; ++i) v.tokens.push_back(static_cast<TokenId>(get_le32(p + kHeaderBytes + 4 * i)));
    return v;
}

Status append_kv_blob(KvCache& kv, int32_t seq, const KvBlobView& b, uint64_t fingerprint) {
    if (!kv.valid(seq)) return make_error(ErrorCode::kInvalidArgument, fmt::format("unknown sequence {}", seq));
    const auto& s = kv.shape();
    if (b.type != s.type)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("KV blob of type {}: this model keeps its KV as {}", dtype_name(b.type),
                                      dtype_name(s.type)));
    if (b.n_layer != s.n_layer || b.n_head_kv != s.n_head_kv || b.head_dim != s.head_dim)
        return make_error(ErrorCode::kInvalidArgument,
                          fmt::format("KV blob of {} layers x {} KV heads x {}: this model has {} x {} x {}", b.n_layer,
                                      b.n_head_kv, b.head_dim, s.n_layer, s.n_head_kv, s.head_dim));
    if (b.fingerprint != fingerprint)
        return make_error(ErrorCode::kInvalidArgument,
                          "KV blob computed by another model (weights or RoPE setting differ): refused");
    if (b.first != kv.length(seq))
        return make_error(ErrorCode::kOutOfRange,
                          fmt::format("KV blob starts at position {}, the sequence holds {}", b.first, kv.length(seq)));
    const size_t count = b.tokens.size();
    const size_t row = kv.row_bytes();
    if (auto st = kv.reserve(seq, count); !st) return st;
    const char* src = b.rows.data();
    for (size_t layer = 0; layer < s.n_layer; ++layer) {
        for (size_t i = 0; i < count; ++i, src += row) std::memcpy(kv.k_at(seq, layer, b.first + i), src, row);
        for (size_t i = 0; i < count; ++i, src += row) std::memcpy(kv.v_at(seq, layer, b.first + i), src, row);
    }
    kv.commit(seq, count);
    return {};
}

}  // namespace assistd::engine
