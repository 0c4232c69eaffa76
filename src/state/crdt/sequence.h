#pragma once
// The ordered-sequence CRDT behind lists and text (an RGA variant kept as runs).
//
// Order rule: an element is inserted right after its origin (the element left
// of it when it was typed), and before any run of elements that follow the
// origin and have larger ids. Because a child's id is always larger than its
// origin's, that one forward scan places concurrent inserts deterministically
// and keeps a run typed by one replica contiguous.
//
// Storage: runs of elements with consecutive ids from one replica, 24 bytes
// each, in chunks of at most kMaxRunsPerChunk runs (so an insert moves a few
// hundred bytes, not the document); text content as UTF-8 in one arena; a
// cached cursor for position lookups (edits are local); and an index from
// run-start id to chunk for lookups by id (remote operations), brought up to
// date only when a lookup by id needs it, so local typing never pays for it.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "state/crdt/encoding.h"
#include "state/crdt/types.h"
#include "state/crdt/version_vector.h"

namespace assistd::state::crdt {

struct SeqRun {
    uint64_t lamport = 0;  // id of the first element
    uint32_t replica = 0;  // index in the sequence's replica table
    uint32_t len = 0;
    uint32_t content = 0;  // the first element's offset in the arena (text: in UTF-8 bytes)
    uint32_t del = 0;      // 0: visible; else 1 + index in the sequence's delete table

    bool visible() const { return del == 0; }
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

    // Local insert of `len` elements named (first.lamport.., first.replica)
    // before visible position `pos` (<= visible_length()). Returns the origin
    // (the element at pos-1, or null at the head).
    OpId insert_local(uint64_t pos, OpId first, uint32_t len, uint32_t content);
    // Remote insert after `origin` (null: head). False if the origin is unknown.
    bool insert_remote(OpId origin, OpId first, uint32_t len, uint32_t content);
    // Deletes `count` visible elements from `pos`. For each run of consecutive
    // ids, `name_delete(first_target, n)` returns the id of the delete op.
    void delete_local(uint64_t pos, uint64_t count,
                      const std::function<OpId(OpId, uint32_t)>& name_delete);
    // Deletes the elements with ids target..target+count-1 (those still present).
    void delete_ids(OpId target, uint32_t count, OpId del);

    // Reads.
    std::string text() const;  // UTF-8
    std::vector<Value> values() const;
    const Value* value_at(uint64_t pos);
    OpId id_at(uint64_t pos);
    void for_each_visible_value(const std::function<void(const Value&)>& fn) const;

    // Drops tombstones whose delete every replica has seen (see docs/state.md
    // for why the element after a dropped run must be stable too).
    uint64_t compact(const VersionVector& stable);
    uint64_t tombstone_count() const;

    // Canonical encoding: runs merged as far as possible, deleted content omitted.
    void encode_state(Writer& w,
                      const std::function<void(Writer&, const Value&)>& write_value) const;
    size_t memory_bytes() const;
    size_t run_count() const;

  private:
    struct Chunk {
        std::vector<SeqRun> runs;
        uint64_t visible = 0;
        size_t order = 0;  // index in chunks_, exact below orders_valid_
    };
    struct Pos {
        size_t chunk = 0;
        size_t run = 0;
        uint32_t off = 0;
    };
    using IndexKey = std::pair<uint32_t, uint64_t>;  // (replica index, run start)
    struct IndexEntry {
        IndexKey key;
        Chunk* chunk;
    };
    // "The runs with ids lamport..lamport+len-1 of replica now live in chunk":
    // an index update not yet applied.
    struct IndexNote {
        uint64_t lamport;
        uint32_t replica;
        uint32_t len;
        Chunk* chunk;
    };

    OpId id_of(const SeqRun& r, uint32_t off) const {
        return OpId{r.lamport + off, replicas_[r.replica]};
    }
    OpId del_of(const SeqRun& r) const { return r.visible() ? OpId{} : deletes_[r.del - 1]; }
    uint32_t replica_index(ReplicaId replica);
    bool find_replica(ReplicaId replica, uint32_t& index) const;
    uint32_t delete_index(OpId del);
    uint32_t text_advance(uint32_t byte, uint64_t n) const;
    uint32_t content_at(const SeqRun& r, uint32_t off) const;
    bool content_follows(const SeqRun& a, uint32_t content) const;
    bool same_deletion(const SeqRun& a, const SeqRun& b) const;

    bool at_end(const Pos& p) const;
    void normalize(Pos& p) const;
    Pos locate_visible(uint64_t pos);
    bool locate_id(OpId id, Pos& out);
    Pos insert_at(Pos gap, const SeqRun& run);
    void split_run(size_t ci, size_t ri, uint32_t off);
    void mark_deleted(size_t ci, size_t ri, uint32_t off, uint32_t n, OpId del);
    size_t maybe_split_chunk(size_t ci);
    void note_index(const SeqRun& run, Chunk* chunk);
    static bool key_below(const IndexKey& key, const IndexEntry& e);
    void index_set(IndexKey key, Chunk* chunk);
    const Chunk* index_floor(IndexKey key) const;
    bool index_next(IndexKey key, uint64_t& lamport) const;
    void sync_index();
    void rebuild(std::vector<SeqRun> runs);

    bool is_text_;
    std::string chars_;          // text content, UTF-8
    std::vector<Value> values_;  // list content
    std::vector<ReplicaId> replicas_;
    std::vector<OpId> deletes_;
    std::vector<std::unique_ptr<Chunk>> chunks_;
    size_t orders_valid_ = 1;
    uint64_t visible_ = 0;
    // The element whose content was appended last, and where it ends: a new
    // run may extend a run ending with it only if its content follows on.
    uint32_t tail_replica_ = 0;
    uint64_t tail_lamport_ = 0;
    uint32_t tail_end_ = 0;
    // Id index: (replica index, run start) -> chunk, a sorted vector built in
    // bulk plus a tree of the keys added since, and the updates not yet
    // applied; when they outgrow a rebuild, the log is dropped for one.
    std::vector<IndexEntry> index_base_;
    std::map<IndexKey, Chunk*> index_added_;
    std::vector<IndexNote> index_log_;
    bool index_stale_ = false;
    // Where the last local insert ended (the end of that run, at visible
    // position typing_pos_), while nothing else has changed the sequence:
    // the next keystroke there extends the run without a lookup.
    std::optional<Pos> typing_;
    uint64_t typing_pos_ = 0;
    // Cursor cache: a chunk and the number of visible elements before it.
    bool cache_valid_ = false;
    size_t cache_chunk_ = 0;
    uint64_t cache_before_ = 0;
};

}  // namespace assistd::state::crdt
