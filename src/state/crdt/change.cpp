#include "state/crdt/change.h"

namespace assistd::state::crdt {
namespace {

Error corrupt(const char* what) { return make_error(ErrorCode::kCorrupt, std::string("crdt: corrupt encoding: ") + what); }

void write_id(Writer& w, const OpId& id) {
    w.varint(id.lamport);
    if (id.lamport != 0) w.varint(id.replica);
}

bool read_id(Reader& r, OpId& id) {
    id = OpId{};
    if (!r.varint(id.lamport) || id.lamport > kMaxLamport) return false;
    return id.lamport == 0 || r.varint(id.replica);
}

}  // namespace

void encode_value(Writer& w, const Value& v) {
    w.u8(static_cast<uint8_t>(v.kind));
    switch (v.kind) {
        case Value::Kind::kNull: break;
        case Value::Kind::kBool: w.u8(v.b ? 1 : 0); break;
        case Value::Kind::kInt: w.svarint(v.i); break;
        case Value::Kind::kDouble: w.f64(v.d); break;
        case Value::Kind::kString: w.bytes(v.s); break;
        case Value::Kind::kObject: w.u8(static_cast<uint8_t>(v.type)); break;  // id = the op's id
    }
}

bool decode_value(Reader& r, Value& v) {
    uint8_t kind;
    if (!r.u8(kind) || kind > 5) return false;
    v = Value{};
    v.kind = static_cast<Value::Kind>(kind);
    switch (v.kind) {
        case Value::Kind::kNull: return true;
        case Value::Kind::kBool: {
            uint8_t b;
            if (!r.u8(b) || b > 1) return false;
            v.b = b == 1;
            return true;
        }
        case Value::Kind::kInt: return r.svarint(v.i);
        case Value::Kind::kDouble: return r.f64(v.d);
        case Value::Kind::kString: {
            std::string_view s;
            if (!r.bytes(s)) return false;
            v.s.assign(s);
            return true;
        }
        case Value::Kind::kObject: {
            uint8_t t;
            if (!r.u8(t) || !valid_obj_type(t)) return false;
            v.type = static_cast<ObjType>(t);
            return true;
        }
    }
    return false;
}

uint64_t Change::width() const {
    uint64_t w = 0;
    for (const Op& op : ops) w += op.width();
    return w;
}

void encode_change(const Change& c, Writer& w) {
    encode_change_head(c, c.ops.size(), w);
    for (const Op& op : c.ops) encode_op(op, w);
}

void encode_change_head(const Change& c, uint64_t op_count, Writer& w) {
    w.varint(c.replica);
    w.varint(c.prev);
    w.varint(c.start - c.prev);
    w.varint(c.deps.entries().size());
    for (const auto& [replica, lamport] : c.deps.entries()) {
        w.varint(replica);
        w.varint(lamport);
    }
    w.varint(op_count);
}

void encode_op(const Op& op, Writer& w) {
    w.u8(static_cast<uint8_t>(op.kind));
    write_id(w, op.obj);
    switch (op.kind) {
        case OpKind::kMapSet:
            w.bytes(op.key);
            encode_value(w, op.value);
            break;
        case OpKind::kMapDelete:
            w.bytes(op.key);
            break;
        case OpKind::kSeqInsert: {
            write_id(w, op.ref);
            w.varint(op.count);
            if (!op.text.empty() || op.values.empty()) {
                w.u8(0);
                size_t n = 0;
                for (char32_t cp : op.text)
                    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
                w.varint(n);
                for (char32_t cp : op.text) {
                    if (cp < 0x80)
                        w.u8(static_cast<uint8_t>(cp));
                    else
                        utf8_append(w.str(), cp);
                }
            } else {
                w.u8(1);
                for (const Value& v : op.values) encode_value(w, v);
            }
            break;
        }
        case OpKind::kSeqDelete:
            write_id(w, op.ref);
            w.varint(op.count);
            break;
        case OpKind::kCounterAdd:
            w.svarint(op.delta);
            break;
        case OpKind::kRegisterSet:
            encode_value(w, op.value);
            break;
    }
}

Result<Change> decode_change(std::string_view bytes) {
    Reader r(bytes);
    Change c;
    uint64_t gap, ndeps, nops;
    if (!r.varint(c.replica) || !r.varint(c.prev) || !r.varint(gap)) return corrupt("change header truncated");
    if (c.replica == 0) return corrupt("replica id 0 is reserved");
    if (gap == 0 || c.prev > kMaxLamport || gap > kMaxLamport) return corrupt("change lamport out of range");
    c.start = c.prev + gap;
    if (!r.varint(ndeps) || ndeps > r.remaining()) return corrupt("deps truncated");
    ReplicaId last = 0;
    for (uint64_t i = 0; i < ndeps; ++i) {
        uint64_t replica, lamport;
        if (!r.varint(replica) || !r.varint(lamport)) return corrupt("deps truncated");
        if (replica <= last || replica == c.replica || lamport == 0 || lamport > kMaxLamport) {
            return corrupt("deps not sorted or out of range");
        }
        c.deps.set(replica, lamport);
        last = replica;
    }
    // An author has seen only what came before its own clock.
    for (const auto& [replica, lamport] : c.deps.entries()) {
        if (lamport >= c.start) return corrupt("deps from the future of the change");
    }
    if (!r.varint(nops) || nops == 0 || nops > r.remaining()) return corrupt("op count out of range");
    c.ops.reserve(nops);
    uint64_t width = 0;
    for (uint64_t i = 0; i < nops; ++i) {
        Op op;
        uint8_t kind;
        if (!r.u8(kind) || kind < 1 || kind > 6) return corrupt("unknown op kind");
        op.kind = static_cast<OpKind>(kind);
        if (!read_id(r, op.obj)) return corrupt("object id");
        std::string_view key;
        switch (op.kind) {
            case OpKind::kMapSet:
                if (!r.bytes(key) || !decode_value(r, op.value)) return corrupt("map set");
                op.key.assign(key);
                break;
            case OpKind::kMapDelete:
                if (!r.bytes(key)) return corrupt("map delete");
                op.key.assign(key);
                break;
            case OpKind::kSeqInsert: {
                uint64_t count;
                uint8_t form;
                if (!read_id(r, op.ref) || !r.varint(count) || !r.u8(form)) return corrupt("insert");
                if (count == 0 || count > kMaxRunLength || form > 1) return corrupt("insert count");
                op.count = static_cast<uint32_t>(count);
                if (form == 0) {
                    std::string_view utf8;
                    if (!r.bytes(utf8) || !utf8_decode(utf8, op.text) || op.text.size() != count) {
                        return corrupt("insert text");
                    }
                } else {
                    if (count > r.remaining()) return corrupt("insert values");
                    op.values.resize(count);
                    for (Value& v : op.values) {
                        if (!decode_value(r, v)) return corrupt("insert value");
                    }
                }
                break;
            }
            case OpKind::kSeqDelete: {
                uint64_t count;
                if (!read_id(r, op.ref) || op.ref.is_null() || !r.varint(count)) return corrupt("delete");
                if (count == 0 || count > kMaxRunLength || op.ref.lamport + count > kMaxLamport) {
                    return corrupt("delete count");
                }
                op.count = static_cast<uint32_t>(count);
                break;
            }
            case OpKind::kCounterAdd:
                if (!r.svarint(op.delta)) return corrupt("counter");
                break;
            case OpKind::kRegisterSet:
                if (!decode_value(r, op.value)) return corrupt("register");
                break;
        }
        width += op.width();
        if (width > kMaxLamport) return corrupt("change too wide");
        c.ops.push_back(std::move(op));
    }
    if (!r.done()) return corrupt("trailing bytes after change");
    if (c.start + width > kMaxLamport) return corrupt("lamport overflow");
    return c;
}

std::string encode_delta(const std::vector<std::string_view>& encoded_changes) {
    Writer w;
    w.u8(kDeltaMagic);
    w.u8(kFormatVersion);
    w.varint(encoded_changes.size());
    for (std::string_view c : encoded_changes) w.bytes(c);
    return w.take();
}

Result<std::vector<DecodedChange>> decode_change_list(std::string_view bytes, uint8_t magic, const char* what) {
    Reader r(bytes);
    uint8_t got_magic, version;
    uint64_t n;
    if (!r.u8(got_magic) || got_magic != magic) {
        return make_error(ErrorCode::kCorrupt, std::string("crdt: corrupt encoding: not a ") + what + " (bad magic)");
    }
    if (!r.u8(version)) return corrupt("truncated");
    if (version != kFormatVersion) {
        return make_error(ErrorCode::kUnsupported, std::string("crdt: ") + what + " format version " +
                                                       std::to_string(version) +
                                                       " is not supported (this build reads version 1)");
    }
    if (!r.varint(n) || n > r.remaining()) return corrupt("change count");
    std::vector<DecodedChange> out;
    out.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
        std::string_view bytes_i;
        if (!r.bytes(bytes_i)) return corrupt("change truncated");
        auto c = decode_change(bytes_i);
        if (!c.ok()) return c.error();
        out.push_back(DecodedChange{std::move(c).value(), bytes_i});
    }
    if (!r.done()) {
        return make_error(ErrorCode::kCorrupt, std::string("crdt: corrupt encoding: trailing bytes after ") + what);
    }
    return out;
}

Result<std::vector<DecodedChange>> decode_delta(std::string_view bytes) {
    return decode_change_list(bytes, kDeltaMagic, "delta");
}

}  // namespace assistd::state::crdt
