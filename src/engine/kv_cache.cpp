#include "engine/kv_cache.h"

#include <sys/mman.h>

#include <fmt/format.h>

#include <cstring>

namespace assistd::engine {

Result<KvCache> KvCache::create(const KvCacheShape& shape) {
    if (shape.type != DType::F16 && shape.type != DType::F32)
        return make_error(ErrorCode::kInvalidArgument, "the KV cache type must be f16 or f32");
    if (shape.block_tokens == 0 || shape.n_blocks == 0 || shape.max_sequences == 0)
        return make_error(ErrorCode::kInvalidArgument, "the KV cache needs at least one block and one sequence");
    KvCache c;
    c.shape_ = shape;
    c.row_bytes_ = shape.n_head_kv * shape.head_dim * dtype_block_bytes(shape.type);
    c.block_bytes_ = c.row_bytes_ * shape.block_tokens;
    const size_t total = c.block_bytes_ * shape.n_layer * 2 * shape.n_blocks;
    c.storage_.reset(static_cast<uint8_t*>(std::calloc(total, 1)));
    if (!c.storage_)
        return make_error(ErrorCode::kResourceExhausted,
                          fmt::format("cannot allocate {} MiB for the KV cache", total >> 20));
    c.storage_bytes_ = total;
    // Huge pages where the kernel gives them on request: a sequence's KV filled
    // at once (a prefill, or KV imported from a peer or disk) then faults 2 MiB
    // at a time instead of 4 KiB (an import of 46 MB spent more time in page
    // faults than in copying).
    {
        const auto begin = (reinterpret_cast<uintptr_t>(c.storage_.get()) + (2u << 20) - 1) & ~uintptr_t{(2u << 20) - 1};
        const auto end = (reinterpret_cast<uintptr_t>(c.storage_.get()) + total) & ~uintptr_t{(2u << 20) - 1};
        if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
    c.refcount_.assign(shape.n_blocks, 0);
    c.free_.reserve(shape.n_blocks);
    for (size_t b = shape.n_blocks; b-- > 0;) c.free_.push_back(static_cast<int32_t>(b));
    c.seqs_.resize(shape.max_sequences);
    return c;
}

Result<int32_t> KvCache::create_sequence() {
    for (size_t i = 0; i < seqs_.size(); ++i) {
        if (!seqs_[i].alive) {
            seqs_[i] = Sequence{true, 0, {}};
            return static_cast<int32_t>(i);
        }
    }
    return make_error(ErrorCode::kResourceExhausted,
                      fmt::format("all {} sequence slots are in use", seqs_.size()));
}

bool KvCache::valid(int32_t seq) const {
    return seq >= 0 && static_cast<size_t>(seq) < seqs_.size() && seqs_[seq].alive;
}

void KvCache::free_sequence(int32_t seq) {
    if (!valid(seq)) return;
    for (int32_t b : seqs_[seq].blocks) release_block(b);
    seqs_[seq] = Sequence{};
}

Result<int32_t> KvCache::take_block() {
    if (free_.empty())
        return make_error(ErrorCode::kResourceExhausted,
                          fmt::format("the KV cache is full ({} blocks of {} tokens in use)", shape_.n_blocks,
                                      shape_.block_tokens));
    const int32_t b = free_.back();
    free_.pop_back();
    refcount_[b] = 1;
    return b;
}

void KvCache::release_block(int32_t block) {
    if (--refcount_[block] == 0) free_.push_back(block);
}

Status KvCache::make_block_private(int32_t seq, size_t block_index) {
    int32_t& b = seqs_[seq].blocks[block_index];
    if (refcount_[b] <= 1) return {};
    auto fresh = take_block();
    if (!fresh) return fresh.error();
    for (size_t l = 0; l < shape_.n_layer; ++l) {
        std::memcpy(base(*fresh, l, 0), base(b, l, 0), block_bytes_);
        std::memcpy(base(*fresh, l, 1), base(b, l, 1), block_bytes_);
    }
    release_block(b);
    b = *fresh;
    return {};
}

Status KvCache::truncate(int32_t seq, size_t n_tokens) {
    if (!valid(seq)) return make_error(ErrorCode::kInvalidArgument, fmt::format("unknown sequence {}", seq));
    auto& s = seqs_[seq];
    if (n_tokens >= s.length) return {};
    const size_t keep_blocks = (n_tokens + shape_.block_tokens - 1) / shape_.block_tokens;
    while (s.blocks.size() > keep_blocks) {
        release_block(s.blocks.back());
        s.blocks.pop_back();
    }
    s.length = n_tokens;
    return {};
}

Result<int32_t> KvCache::fork(int32_t src, size_t n_tokens) {
    if (!valid(src)) return make_error(ErrorCode::kInvalidArgument, fmt::format("unknown sequence {}", src));
    if (n_tokens > seqs_[src].length)
        return make_error(ErrorCode::kOutOfRange,
                          fmt::format("cannot fork {} tokens of a sequence holding {}", n_tokens, seqs_[src].length));
    auto dst = create_sequence();
    if (!dst) return dst.error();
    auto& d = seqs_[*dst];
    const size_t n_blocks = (n_tokens + shape_.block_tokens - 1) / shape_.block_tokens;
    for (size_t i = 0; i < n_blocks; ++i) {
        const int32_t b = seqs_[src].blocks[i];
        ++refcount_[b];
        d.blocks.push_back(b);
    }
    d.length = n_tokens;
    return *dst;
}

Status KvCache::reserve(int32_t seq, size_t n_more) {
    auto& s = seqs_[seq];
    const size_t bt = shape_.block_tokens;
    // A partly filled shared tail block gets written: give this sequence its own copy.
    if (n_more > 0 && s.length % bt != 0) {
        if (auto st = make_block_private(seq, s.length / bt); !st) return st;
    }
    const size_t need = (s.length + n_more + bt - 1) / bt;
    const size_t before = s.blocks.size();
    while (s.blocks.size() < need) {
        auto b = take_block();
        if (!b) {
            while (s.blocks.size() > before) {
                release_block(s.blocks.back());
                s.blocks.pop_back();
            }
            return b.error();
        }
        s.blocks.push_back(*b);
    }
    return {};
}

}  // namespace assistd::engine
