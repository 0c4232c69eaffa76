#pragma once
// Operations and changes, and their binary encoding.
//
// A change is a run of operations by one replica, applied atomically. It names
// the end lamport of its author's previous change (`prev`) and what the author
// had seen from other replicas (`deps`), so a receiver applies changes in
// causal order and buffers the rest. Every operation consumes `width()`
// consecutive lamports starting at the change's `start`; an insert of n
// elements names them (start..start+n-1, replica), which is what makes a typed
// run one operation ("run-length" in the format).
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "state/crdt/encoding.h"
#include "state/crdt/types.h"
#include "state/crdt/version_vector.h"

namespace assistd::state::crdt {

inline constexpr uint8_t kFormatVersion = 1;
inline constexpr uint8_t kDeltaMagic = 0xAD;
inline constexpr uint8_t kDocumentMagic = 0xDC;
// Bounds that keep hostile input from asking for absurd work.
inline constexpr uint64_t kMaxLamport = uint64_t{1} << 60;
inline constexpr uint64_t kMaxRunLength = uint64_t{1} << 24;

enum class OpKind : uint8_t {
    kMapSet = 1,       // key := value (maybe a new container, named by this op's id)
    kMapDelete = 2,    // drop every value of key this author had seen
    kSeqInsert = 3,    // count elements after `ref` (null ref: at the head)
    kSeqDelete = 4,    // delete elements ref.lamport .. ref.lamport+count-1 of ref.replica
    kCounterAdd = 5,
    kRegisterSet = 6,
};

struct Op {
    OpKind kind = OpKind::kMapSet;
    ObjId obj;
    std::string key;
    Value value;                // kMapSet / kRegisterSet
    OpId ref;                   // kSeqInsert origin / kSeqDelete first target
    uint32_t count = 1;         // kSeqInsert / kSeqDelete
    std::u32string text;        // kSeqInsert into text
    std::vector<Value> values;  // kSeqInsert into a list
    int64_t delta = 0;          // kCounterAdd

    uint64_t width() const { return kind == OpKind::kSeqInsert || kind == OpKind::kSeqDelete ? count : 1; }
};

struct Change {
    ReplicaId replica = 0;
    uint64_t prev = 0;    // end lamport of the author's previous change, 0 if none
    uint64_t start = 0;   // lamport of the first op
    VersionVector deps;   // what the author had seen of other replicas
    std::vector<Op> ops;

    uint64_t width() const;
    uint64_t end() const { return start + width() - 1; }
};

void encode_change(const Change& change, Writer& out);
// The same, in two parts, for a change written while it grows: everything
// before the ops (`op_count` ops follow), and one op.
void encode_change_head(const Change& change, uint64_t op_count, Writer& out);
void encode_op(const Op& op, Writer& out);
// A value as changes encode it (a nested container's id is the op's own).
void encode_value(Writer& w, const Value& v);
bool decode_value(Reader& r, Value& v);
Result<Change> decode_change(std::string_view bytes);

// A delta: magic, format version, then length-prefixed encoded changes.
std::string encode_delta(const std::vector<std::string_view>& encoded_changes);
struct DecodedChange {
    Change change;
    std::string_view bytes;  // the change's own encoding, a slice of the input
};
Result<std::vector<DecodedChange>> decode_delta(std::string_view bytes);
// The framing deltas and documents share: magic, format version, a counted
// list of encoded changes, nothing after. `what` names the kind in errors.
Result<std::vector<DecodedChange>> decode_change_list(std::string_view bytes, uint8_t magic, const char* what);

}  // namespace assistd::state::crdt
