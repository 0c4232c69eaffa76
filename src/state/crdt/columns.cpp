#include "state/crdt/columns.h"

#include <zlib.h>

#include <algorithm>

#include "common/utf8.h"

namespace assistd::state::crdt {
namespace {

// Bodies this small are stored as they are: deflate's framing would eat the gain.
constexpr size_t kDeflateAbove = 256;
constexpr uint8_t kStored = 0;
constexpr uint8_t kDeflated = 1;
// Deflate expands at most ~1032:1; a claimed size beyond that is a lie.
constexpr uint64_t kMaxInflateRatio = 1032;
constexpr uint64_t kMaxBodyBytes = uint64_t{1} << 31;

Error corrupt(const char* what) {
    return make_error(ErrorCode::kCorrupt,
                      std::string("crdt: corrupt encoding: document: ") + what);
}

// The columns, in the order they are written.
struct Columns {
    Writer replicas;     // #replicas, then sorted ids as deltas
    Writer change_head;  // per change: replica index, start - prev, #ops
    Writer change_deps;  // per change: #deps, then (replica index delta, start - lamport)
    Writer kinds;        // per op: kind
    Writer
        objs;  // per op: 0 same object as the previous op, 1 root, 2 + replica index then lamport
    Writer keys;          // map set / delete: key
    Writer values;        // map set / register set, list insert: values
    Writer refs;          // insert / delete: 0 null, else 1 + replica index
    Writer ref_lamports;  // insert / delete with a ref: op lamport - ref lamport (zigzag)
    Writer counts;        // insert / delete: count; insert: then form
    Writer deltas;        // counter add
    Writer text;          // text inserts' UTF-8, end to end

    std::vector<Writer*> all() {
        return {&replicas, &change_head, &change_deps,  &kinds,  &objs,   &keys,
                &values,   &refs,        &ref_lamports, &counts, &deltas, &text};
    }
};

struct ColumnReaders {
    std::vector<Reader> r;
    Reader& replicas() { return r[0]; }
    Reader& change_head() { return r[1]; }
    Reader& change_deps() { return r[2]; }
    Reader& kinds() { return r[3]; }
    Reader& objs() { return r[4]; }
    Reader& keys() { return r[5]; }
    Reader& values() { return r[6]; }
    Reader& refs() { return r[7]; }
    Reader& ref_lamports() { return r[8]; }
    Reader& counts() { return r[9]; }
    Reader& deltas() { return r[10]; }
    Reader& text() { return r[11]; }
};
constexpr size_t kColumnCount = 12;

uint32_t index_of(const std::vector<ReplicaId>& replicas, ReplicaId r) {
    return static_cast<uint32_t>(std::lower_bound(replicas.begin(), replicas.end(), r) -
                                 replicas.begin());
}

}  // namespace

std::string encode_document_columns(const std::vector<Change>& changes) {
    std::vector<ReplicaId> replicas;
    auto add = [&](ReplicaId r) { replicas.push_back(r); };
    for (const Change& c : changes) {
        add(c.replica);
        for (const auto& [r, l] : c.deps.entries()) add(r);
        for (const Op& op : c.ops) {
            if (!op.obj.is_null()) add(op.obj.replica);
            if (!op.ref.is_null()) add(op.ref.replica);
        }
    }
    std::sort(replicas.begin(), replicas.end());
    replicas.erase(std::unique(replicas.begin(), replicas.end()), replicas.end());

    Columns col;
    col.replicas.varint(replicas.size());
    ReplicaId prev_replica = 0;
    for (ReplicaId r : replicas) {
        col.replicas.varint(r - prev_replica);
        prev_replica = r;
    }
    col.change_head.varint(changes.size());
    ObjId prev_obj{~uint64_t{0}, 0};  // matches no object
    for (const Change& c : changes) {
        col.change_head.varint(index_of(replicas, c.replica));
        col.change_head.varint(c.start - c.prev);
        col.change_head.varint(c.ops.size());
        col.change_deps.varint(c.deps.entries().size());
        uint32_t prev_index = 0;
        for (const auto& [r, l] : c.deps.entries()) {
            const uint32_t i = index_of(replicas, r);
            col.change_deps.varint(i - prev_index);
            col.change_deps.varint(c.start - l);
            prev_index = i;
        }
        uint64_t lamport = c.start;
        for (const Op& op : c.ops) {
            col.kinds.u8(static_cast<uint8_t>(op.kind));
            if (op.obj == prev_obj) {
                col.objs.varint(0);
            } else if (op.obj.is_null()) {
                col.objs.varint(1);
            } else {
                col.objs.varint(2 + index_of(replicas, op.obj.replica));
                col.objs.varint(op.obj.lamport);
            }
            prev_obj = op.obj;
            switch (op.kind) {
                case OpKind::kMapSet:
                    col.keys.bytes(op.key);
                    encode_value(col.values, op.value);
                    break;
                case OpKind::kMapDelete:
                    col.keys.bytes(op.key);
                    break;
                case OpKind::kRegisterSet:
                    encode_value(col.values, op.value);
                    break;
                case OpKind::kCounterAdd:
                    col.deltas.svarint(op.delta);
                    break;
                case OpKind::kSeqInsert:
                case OpKind::kSeqDelete: {
                    if (op.ref.is_null()) {
                        col.refs.varint(0);
                    } else {
                        col.refs.varint(1 + index_of(replicas, op.ref.replica));
                        col.ref_lamports.svarint(static_cast<int64_t>(lamport - op.ref.lamport));
                    }
                    col.counts.varint(op.count);
                    if (op.kind == OpKind::kSeqDelete) break;
                    // The same choice of form as the version-1 change encoding.
                    const bool as_text = !op.text.empty() || op.values.empty();
                    col.counts.u8(as_text ? 0 : 1);
                    if (as_text) {
                        for (char32_t cp : op.text) utf8_append(col.text.str(), cp);
                    } else {
                        for (const Value& v : op.values) encode_value(col.values, v);
                    }
                    break;
                }
            }
            lamport += op.width();
        }
    }
    Writer body;
    for (Writer* w : col.all()) body.bytes(w->str());
    const std::string& raw = body.str();

    Writer out;
    out.u8(kDocumentMagic);
    out.u8(kColumnsFormatVersion);
    if (raw.size() > kDeflateAbove) {
        uLongf packed_size = compressBound(raw.size());
        std::string packed(packed_size, '\0');
        if (compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_size,
                      reinterpret_cast<const Bytef*>(raw.data()), raw.size(),
                      Z_BEST_COMPRESSION) == Z_OK &&
            packed_size < raw.size()) {
            packed.resize(packed_size);
            out.u8(kDeflated);
            out.varint(raw.size());
            out.raw(packed);
            return out.take();
        }
    }
    out.u8(kStored);
    out.raw(raw);
    return out.take();
}

Result<std::vector<Change>> decode_document_columns(std::string_view bytes) {
    Reader head(bytes);
    uint8_t magic, version, packing;
    if (!head.u8(magic) || magic != kDocumentMagic || !head.u8(version) ||
        version != kColumnsFormatVersion || !head.u8(packing)) {
        return corrupt("header");
    }
    std::string inflated;
    std::string_view body = bytes.substr(3);
    if (packing == kDeflated) {
        uint64_t raw_size;
        if (!head.varint(raw_size)) return corrupt("size truncated");
        const std::string_view packed = bytes.substr(bytes.size() - head.remaining());
        if (raw_size == 0 || raw_size > kMaxBodyBytes ||
            raw_size > kMaxInflateRatio * (packed.size() + 1)) {
            return corrupt("implausible size");
        }
        inflated.resize(raw_size);
        uLongf got = raw_size;
        uLong used = packed.size();
        if (uncompress2(reinterpret_cast<Bytef*>(inflated.data()), &got,
                        reinterpret_cast<const Bytef*>(packed.data()), &used) != Z_OK ||
            got != raw_size || used != packed.size()) {
            return corrupt("deflated body");
        }
        body = inflated;
    } else if (packing != kStored) {
        return corrupt("unknown packing");
    }

    Reader framing(body);
    ColumnReaders col;
    for (size_t i = 0; i < kColumnCount; ++i) {
        std::string_view s;
        if (!framing.bytes(s)) return corrupt("column truncated");
        col.r.emplace_back(s);
    }
    if (!framing.done()) return corrupt("trailing bytes");

    uint64_t nreplicas;
    if (!col.replicas().varint(nreplicas) || nreplicas > col.replicas().remaining())
        return corrupt("replicas");
    std::vector<ReplicaId> replicas;
    ReplicaId replica = 0;
    for (uint64_t i = 0; i < nreplicas; ++i) {
        uint64_t delta;
        if (!col.replicas().varint(delta) || (i > 0 && delta == 0) || replica + delta < replica) {
            return corrupt("replicas");
        }
        replica += delta;
        replicas.push_back(replica);
    }
    auto replica_at = [&](uint64_t index, ReplicaId& out) {
        if (index >= replicas.size()) return false;
        out = replicas[index];
        return true;
    };

    uint64_t nchanges;
    if (!col.change_head().varint(nchanges) || nchanges > col.change_head().remaining())
        return corrupt("changes");
    std::vector<Change> changes;
    changes.reserve(nchanges);
    std::vector<std::pair<ReplicaId, uint64_t>> ends;  // each author's last change end so far
    ObjId prev_obj;
    bool have_prev_obj = false;
    for (uint64_t ci = 0; ci < nchanges; ++ci) {
        Change c;
        uint64_t replica_index, gap, nops, ndeps;
        Reader& h = col.change_head();
        if (!h.varint(replica_index) || !replica_at(replica_index, c.replica) || !h.varint(gap) ||
            !h.varint(nops)) {
            return corrupt("change header");
        }
        // A change continues its author's previous one in the document.
        auto end_it = std::find_if(ends.begin(), ends.end(),
                                   [&](const auto& e) { return e.first == c.replica; });
        if (end_it == ends.end()) end_it = ends.insert(ends.end(), {c.replica, 0});
        c.prev = end_it->second;
        if (gap == 0 || gap > kMaxLamport) return corrupt("change lamport");
        c.start = c.prev + gap;
        if (c.start > kMaxLamport) return corrupt("change lamport");
        Reader& d = col.change_deps();
        if (!d.varint(ndeps) || ndeps > d.remaining()) return corrupt("deps");
        uint64_t dep_index = 0;
        for (uint64_t i = 0; i < ndeps; ++i) {
            uint64_t delta, back;
            ReplicaId r;
            if (!d.varint(delta) || !d.varint(back) || (i > 0 && delta == 0))
                return corrupt("deps");
            dep_index += delta;
            if (!replica_at(dep_index, r) || back == 0 || back > c.start) return corrupt("deps");
            c.deps.set(r, c.start - back);
        }
        if (nops == 0 || nops > col.kinds().remaining()) return corrupt("op count");
        uint64_t lamport = c.start;
        c.ops.reserve(nops);
        for (uint64_t oi = 0; oi < nops; ++oi) {
            Op op;
            uint8_t kind;
            if (!col.kinds().u8(kind) || kind < 1 || kind > 6) return corrupt("op kind");
            op.kind = static_cast<OpKind>(kind);
            uint64_t obj_code;
            if (!col.objs().varint(obj_code)) return corrupt("object");
            if (obj_code == 0) {
                if (!have_prev_obj) return corrupt("object");
                op.obj = prev_obj;
            } else if (obj_code > 1) {
                if (!replica_at(obj_code - 2, op.obj.replica) ||
                    !col.objs().varint(op.obj.lamport) || op.obj.lamport == 0 ||
                    op.obj.lamport > kMaxLamport) {
                    return corrupt("object");
                }
            }
            prev_obj = op.obj;
            have_prev_obj = true;
            std::string_view key;
            switch (op.kind) {
                case OpKind::kMapSet:
                    if (!col.keys().bytes(key) || !decode_value(col.values(), op.value))
                        return corrupt("map set");
                    op.key.assign(key);
                    break;
                case OpKind::kMapDelete:
                    if (!col.keys().bytes(key)) return corrupt("map delete");
                    op.key.assign(key);
                    break;
                case OpKind::kRegisterSet:
                    if (!decode_value(col.values(), op.value)) return corrupt("register");
                    break;
                case OpKind::kCounterAdd:
                    if (!col.deltas().svarint(op.delta)) return corrupt("counter");
                    break;
                case OpKind::kSeqInsert:
                case OpKind::kSeqDelete: {
                    uint64_t ref_code, count;
                    if (!col.refs().varint(ref_code)) return corrupt("ref");
                    if (ref_code > 0) {
                        int64_t back;
                        if (!replica_at(ref_code - 1, op.ref.replica) ||
                            !col.ref_lamports().svarint(back)) {
                            return corrupt("ref");
                        }
                        op.ref.lamport = lamport - static_cast<uint64_t>(back);
                        if (op.ref.lamport == 0 || op.ref.lamport > kMaxLamport)
                            return corrupt("ref");
                    }
                    if (!col.counts().varint(count) || count == 0 || count > kMaxRunLength)
                        return corrupt("count");
                    op.count = static_cast<uint32_t>(count);
                    if (op.kind == OpKind::kSeqDelete) break;
                    uint8_t form;
                    if (!col.counts().u8(form) || form > 1) return corrupt("insert form");
                    if (form == 0) {
                        std::string_view rest = col.text().rest();
                        size_t used = 0;
                        for (uint64_t k = 0; k < count; ++k) {
                            if (used >= rest.size()) return corrupt("insert text");
                            const DecodedCodePoint cp = decode_utf8(rest, used);
                            if (!cp.valid) return corrupt("insert text");
                            op.text.push_back(static_cast<char32_t>(cp.code_point));
                            used += cp.length;
                        }
                        col.text().skip(used);
                    } else {
                        if (count > col.values().remaining()) return corrupt("insert values");
                        op.values.resize(count);
                        for (Value& v : op.values) {
                            if (!decode_value(col.values(), v)) return corrupt("insert value");
                        }
                    }
                    break;
                }
            }
            lamport += op.width();
            if (lamport > kMaxLamport) return corrupt("change too wide");
            c.ops.push_back(std::move(op));
        }
        end_it->second = lamport - 1;
        changes.push_back(std::move(c));
    }
    for (Reader& r : col.r) {
        if (!r.done()) return corrupt("trailing bytes in a column");
    }
    return changes;
}

}  // namespace assistd::state::crdt
