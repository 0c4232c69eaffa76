#pragma once
// A JSON document whose containers are CRDTs. One Document is one replica of
// it: local edits become operations grouped into changes; `changes_since`
// hands out what another replica lacks, and `apply` takes changes in any
// order, any number of times (buffering those whose causal past is missing).
//
// Containers: maps (multi-value registers per key: concurrent writes all kept,
// the largest id wins, the others are visible as conflicts), lists and text
// (Sequence), counters, and registers (a single multi-value slot).
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "state/crdt/change.h"
#include "state/crdt/sequence.h"
#include "state/crdt/types.h"
#include "state/crdt/version_vector.h"

namespace assistd::state::crdt {

class Document {
public:
    explicit Document(ReplicaId replica);
    ~Document();
    Document(Document&&) noexcept;
    Document& operator=(Document&&) noexcept;

    ReplicaId replica() const { return replica_; }
    ObjId root() const { return kRootObj; }

    // --- local edits (each is applied at once and joins the open change) ---
    Status map_set(ObjId map, std::string_view key, Value scalar);
    Result<ObjId> map_set_object(ObjId map, std::string_view key, ObjType type);
    Status map_delete(ObjId map, std::string_view key);
    Status list_insert(ObjId list, uint64_t index, Value scalar);
    Result<ObjId> list_insert_object(ObjId list, uint64_t index, ObjType type);
    Status list_delete(ObjId list, uint64_t index, uint64_t count = 1);
    Status text_insert(ObjId text, uint64_t pos, std::string_view utf8);
    Status text_insert(ObjId text, uint64_t pos, std::u32string_view chars);
    Status text_delete(ObjId text, uint64_t pos, uint64_t count);
    Status counter_add(ObjId counter, int64_t delta);
    Status register_set(ObjId reg, Value scalar);
    // Seals the open change (if any) into history.
    void commit();

    // --- reads ---
    Result<ObjType> type_of(ObjId obj) const;
    Result<Value> map_get(ObjId map, std::string_view key) const;          // the winner
    std::vector<Value> map_get_all(ObjId map, std::string_view key) const; // winner first, then conflicts
    std::vector<std::string> map_keys(ObjId map) const;
    Result<uint64_t> length(ObjId seq) const;
    Result<Value> list_get(ObjId list, uint64_t index);
    Result<std::string> text(ObjId text) const;
    Result<int64_t> counter_value(ObjId counter) const;
    Result<Value> register_get(ObjId reg) const;
    std::string to_json(ObjId obj = kRootObj) const;

    // --- replication ---
    // Lamport of the last op seen from each replica (own open change included).
    const VersionVector& version() const { return vv_; }
    // A delta with every change not covered by `since`.
    std::string changes_since(const VersionVector& since);
    // Applies a delta. Duplicates are ignored, changes whose causal past is
    // missing wait in a buffer until it arrives. Corrupt bytes: an error and no
    // change to the document.
    Status apply(std::string_view delta);
    size_t pending_changes() const { return pending_.size(); }

    // --- compaction ---
    // What every replica in `members` is known to have seen (empty if one of
    // them has never been heard from). Tombstones under it can go.
    VersionVector stable_version(const std::vector<ReplicaId>& members) const;
    // A peer reports the version it has applied (an acknowledgement). It counts
    // towards stability once this replica holds all of that peer's own ops up
    // to the report: ops it wrote before seeing something may still be in flight.
    void observe_peer_version(ReplicaId peer, const VersionVector& seen);
    uint64_t compact(const VersionVector& stable);
    uint64_t tombstone_count() const;

    // --- encoding ---
    // The whole document: its change history in canonical (lamport, replica)
    // order. Replicas with the same changes produce the same bytes.
    std::string encode();
    static Result<Document> decode(std::string_view bytes, ReplicaId replica);
    // The visible state, canonical (used to check convergence byte-for-byte).
    std::string encode_state() const;

    size_t memory_bytes() const;
    uint64_t op_count() const { return ops_applied_; }

private:
    struct MapEntry {
        OpId id;
        Value value;
    };
    struct Object {
        ObjType type;
        std::map<std::string, std::vector<MapEntry>, std::less<>> map;  // map and register ("")
        std::unique_ptr<Sequence> seq;
        int64_t counter = 0;
    };
    struct StoredChange {
        uint64_t start;
        uint64_t end;
        std::string bytes;
    };

    Object* find(ObjId id, ObjType type) {
        // Edits come in bursts on one object; objects are never freed, so the pointer stays good.
        if (last_obj_ && last_obj_id_ == id) return last_obj_->type == type ? last_obj_ : nullptr;
        return find_slow(id, type);
    }
    Object* find_slow(ObjId id, ObjType type);
    const Object* find(ObjId id, ObjType type) const;
    const Object* find_any(ObjId id) const;
    Op& begin_local_op(uint64_t width, OpId& id);
    void create_object(ObjId id, ObjType type);
    void apply_map_set(Object& obj, const std::string& key, const Value& v, OpId id, const VersionVector& deps);
    void apply_map_delete(Object& obj, const std::string& key, OpId id, const VersionVector& deps);
    void apply_op(const Op& op, OpId id, const VersionVector& deps);
    bool ready(const Change& c) const;
    Status apply_changes(std::vector<DecodedChange>& changes);
    void apply_change(const Change& c, std::string_view bytes);
    Status local_insert(ObjId seq_obj, uint64_t pos, std::u32string_view chars, std::vector<Value> values,
                        bool is_text, OpId* first_id);
    Status local_delete(ObjId seq_obj, uint64_t pos, uint64_t count, bool is_text);
    void write_value_state(Writer& w, const Value& v) const;
    void encode_obj_state(Writer& w, const Object& obj) const;
    void json_value(std::string& out, const Value& v) const;

    ReplicaId replica_;
    uint64_t lamport_ = 0;  // largest lamport seen
    VersionVector vv_;
    std::unordered_map<ObjId, std::unique_ptr<Object>, OpIdHash> objects_;
    std::map<ReplicaId, std::vector<StoredChange>> history_;
    std::map<ReplicaId, VersionVector> known_;  // what each author had seen at its latest change
    std::map<ReplicaId, VersionVector> reports_;  // versions peers said they had applied
    std::map<std::pair<ReplicaId, uint64_t>, std::pair<Change, std::string>> pending_;
    bool open_ = false;
    Change local_;         // the open change: its head and last op
    Writer local_sealed_;  // its ops before the last, encoded
    uint64_t local_sealed_count_ = 0;
    uint64_t last_op_lamport_ = 0;
    uint64_t ops_applied_ = 0;
    ObjId last_obj_id_;
    Object* last_obj_ = nullptr;
};

}  // namespace assistd::state::crdt
