#pragma once
// The ordered-sequence CRDT behind lists and text (an RGA variant kept as runs).
//
// Order rule: an element is inserted right after its origin (the element left
// of it when it was typed), and before any run of elements that follow the
// origin and have larger ids. Because a child's id is always larger than its
// origin's, that one forward scan places concurrent inserts deterministically
// and keeps a run typed by one replica contiguous.
//
// Storage: runs of elements with consecutive ids from one replica, in chunks
// of at most kMaxRunsPerChunk runs (so an insert moves a few KiB, not the
// document), a cached cursor for position lookups (edits are local), and an
// index from run-start id to chunk for lookups by id (remote operations).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "state/crdt/encoding.h"
#include "state/crdt/types.h"
#include "state/crdt/version_vector.h"

namespace assistd::state::crdt {

struct SeqRun {
    uint64_t lamport = 0;  // id of the first element
    ReplicaId replica = 0;
    OpId del;              // the delete that removed this run; null = visible
    uint32_t len = 0;
    uint32_t content = 0;  // offset of the first element in the content arena

    bool visible() const { return del.is_null(); }
    OpId id_at(uint32_t off) const { return OpId{lamport + off, replica}; }
};

class Sequence {
public:
    explicit Sequence(bool is_text);
    ~Sequence();
    Sequence(const Sequence&) = delete;
    Sequence& operator=(const Sequence&) = delete;

    bool is_text() const { return is_text_; }
    uint64_t visible_length() const { return visible_; }

    // Content arena: returns the offset of the appended elements.
    uint32_t add_chars(std::u32string_view chars);
    uint32_t add_values(std::vector<Value> values);
    bool content_at_end(uint32_t content) const;

    // Local insert of `len` elements named (first.lamport.., first.replica)
    // before visible position `pos` (<= visible_length()). Returns the origin
    // (the element at pos-1, or null at the head).
    OpId insert_local(uint64_t pos, OpId first, uint32_t len, uint32_t content);
    // Remote insert after `origin` (null: head). False if the origin is unknown.
    bool insert_remote(OpId origin, OpId first, uint32_t len, uint32_t content);
    // Deletes `count` visible elements from `pos`. For each run of consecutive
    // ids, `name_delete(first_target, n)` returns the id of the delete op.
    void delete_local(uint64_t pos, uint64_t count, const std::function<OpId(OpId, uint32_t)>& name_delete);
    // Deletes the elements with ids target..target+count-1 (those still present).
    void delete_ids(OpId target, uint32_t count, OpId del);
    bool contains(OpId id) const;

    // Reads.
    std::u32string text() const;
    std::vector<Value> values() const;
    const Value* value_at(uint64_t pos);
    OpId id_at(uint64_t pos);
    void for_each_visible_value(const std::function<void(const Value&)>& fn) const;

    // Drops tombstones whose delete every replica has seen (see docs/state.md
    // for why the element after a dropped run must be stable too).
    uint64_t compact(const VersionVector& stable);
    uint64_t tombstone_count() const;

    // Canonical encoding: runs merged as far as possible, deleted content omitted.
    void encode_state(Writer& w, const std::function<void(Writer&, const Value&)>& write_value) const;
    size_t memory_bytes() const;
    size_t run_count() const;

private:
    struct Chunk {
        std::vector<SeqRun> runs;
        uint64_t visible = 0;
        size_t order = 0;  // index in chunks_
    };
    struct Pos {
        size_t chunk = 0;
        size_t run = 0;
        uint32_t off = 0;
    };

    bool at_end(const Pos& p) const;
    void normalize(Pos& p) const;
    Pos locate_visible(uint64_t pos);
    bool locate_id(OpId id, Pos& out) const;
    void insert_at(Pos gap, const SeqRun& run);
    void split_run(size_t ci, size_t ri, uint32_t off);
    void mark_deleted(size_t ci, size_t ri, uint32_t off, uint32_t n, OpId del);
    void maybe_split_chunk(size_t ci);
    void index_range(const SeqRun& run, Chunk* chunk);
    void rebuild(std::vector<SeqRun> runs);
    static bool mergeable(const SeqRun& a, const SeqRun& b);

    bool is_text_;
    std::u32string chars_;
    std::vector<Value> values_;
    std::vector<std::unique_ptr<Chunk>> chunks_;
    std::map<std::pair<ReplicaId, uint64_t>, Chunk*> index_;  // run start -> chunk
    uint64_t visible_ = 0;
    // Cursor cache: a chunk and the number of visible elements before it.
    bool cache_valid_ = false;
    size_t cache_chunk_ = 0;
    uint64_t cache_before_ = 0;
};

}  // namespace assistd::state::crdt
