#pragma once
// The KV cache: a pool of fixed-size blocks (block_tokens positions each,
// every layer's K and V for those positions) and, per sequence, a table of
// the blocks it uses. Blocks are reference-counted so sequences can share a
// prefix (fork) and a writer copies a shared block before changing it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "common/result.h"
#include "engine/dtype.h"

namespace assistd::engine {

struct KvCacheShape {
    size_t n_layer = 0;
    size_t n_head_kv = 0;
    size_t head_dim = 0;
    size_t block_tokens = 16;
    size_t n_blocks = 0;
    size_t max_sequences = 0;
    DType type = DType::F16;  // F16 or F32
};

class KvCache {
public:
    static Result<KvCache> create(const KvCacheShape& shape);

    const KvCacheShape& shape() const { return shape_; }
    size_t free_blocks() const { return free_.size(); }
    size_t bytes() const { return storage_bytes_; }

    Result<int32_t> create_sequence();
    bool valid(int32_t seq) const;
    void free_sequence(int32_t seq);
    size_t length(int32_t seq) const { return seqs_[seq].length; }
    Status truncate(int32_t seq, size_t n_tokens);
    Result<int32_t> fork(int32_t src, size_t n_tokens);

    // Makes room for n more positions (allocating blocks, copying a shared
    // tail block); kResourceExhausted when the pool runs dry.
    Status reserve(int32_t seq, size_t n_more);
    // Marks positions [length, length + n) as written (after the forward pass).
    void commit(int32_t seq, size_t n) { seqs_[seq].length += n; }

    // Address of K (or V) of layer `layer` for position `pos` of `seq`:
    // n_head_kv * head_dim elements of the cache type, contiguous.
    uint8_t* k_at(int32_t seq, size_t layer, size_t pos) { return slot(seq, layer, pos, 0); }
    uint8_t* v_at(int32_t seq, size_t layer, size_t pos) { return slot(seq, layer, pos, 1); }
    // Per block, positions are contiguous: tokens [i*bt, (i+1)*bt) of block i.
    const std::vector<int32_t>& blocks(int32_t seq) const { return seqs_[seq].blocks; }
    uint8_t* block_k(int32_t block, size_t layer) { return base(block, layer, 0); }
    uint8_t* block_v(int32_t block, size_t layer) { return base(block, layer, 1); }
    size_t row_bytes() const { return row_bytes_; }  // one position, all KV heads

private:
    struct Sequence {
        bool alive = false;
        size_t length = 0;
        std::vector<int32_t> blocks;
    };
    uint8_t* base(int32_t block, size_t layer, int kv) {
        return storage_.get() + (static_cast<size_t>(block) * shape_.n_layer * 2 + layer * 2 + kv) * block_bytes_;
    }
    uint8_t* slot(int32_t seq, size_t layer, size_t pos, int kv) {
        const auto& s = seqs_[seq];
        return base(s.blocks[pos / shape_.block_tokens], layer, kv) + (pos % shape_.block_tokens) * row_bytes_;
    }
    Result<int32_t> take_block();
    void release_block(int32_t block);
    Status make_block_private(int32_t seq, size_t block_index);

    KvCacheShape shape_;
    size_t row_bytes_ = 0;    // one position's K (or V) for all KV heads of one layer
    size_t block_bytes_ = 0;  // block_tokens rows
    // calloc'd: a large block comes as untouched zero pages, so a cache sized
    // for many sequences costs nothing at start (a zero-filling vector spent
    // ~0.5 s on smollm2-135m's 720 MiB default) and memory only as it fills.
    struct Free {
        void operator()(uint8_t* p) const { std::free(p); }
    };
    std::unique_ptr<uint8_t, Free> storage_;
    size_t storage_bytes_ = 0;
    std::vector<int32_t> free_;
    std::vector<uint16_t> refcount_;
    std::vector<Sequence> seqs_;
};

}  // namespace assistd::engine
