#include "cdc/pgoutput.h"

#include <cstdio>

#include "knowledge/position.h"

namespace assistd::cdc::pg {
namespace {

Error bad(const std::string& what) {
    return make_error(ErrorCode::kCorrupt, "pgoutput: " + what);
}

// A big-endian reader over one message; every read checks the length.
class Reader {
  public:
    explicit Reader(std::string_view bytes) : in_(bytes) {}
    bool ok() const { return ok_; }
    bool at_end() const { return in_.empty(); }
    uint8_t u8() { return static_cast<uint8_t>(take(1)); }
    uint16_t u16() { return static_cast<uint16_t>(take(2)); }
    uint32_t u32() { return static_cast<uint32_t>(take(4)); }
    uint64_t u64() { return take(8); }
    int64_t i64() { return static_cast<int64_t>(take(8)); }
    // A NUL-terminated string.
    std::string cstring() {
        const size_t end = in_.find('\0');
        if (end == std::string_view::npos) {
            ok_ = false;
            return {};
        }
        std::string s(in_.substr(0, end));
        in_.remove_prefix(end + 1);
        return s;
    }
    std::string bytes(size_t n) {
        if (n > in_.size()) {
            ok_ = false;
            return {};
        }
        std::string s(in_.substr(0, n));
        in_.remove_prefix(n);
        return s;
    }
    std::string_view rest() { return std::exchange(in_, {}); }

  private:
    uint64_t take(size_t n) {
        if (n > in_.size()) {
            ok_ = false;
            in_ = {};
            return 0;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<uint8_t>(in_[i]);
        in_.remove_prefix(n);
        return v;
    }
    std::string_view in_;
    bool ok_ = true;
};

void put(std::string& out, uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// TupleData: int16 count, then per column 'n', 'u' or 't' + int32 length + bytes.
bool read_tuple(Reader& r, Tuple& out) {
    const uint16_t n = r.u16();
    if (!r.ok()) return false;
    out.clear();
    out.reserve(n);
    for (uint16_t i = 0; i < n; ++i) {
        TupleValue v;
        const char kind = static_cast<char>(r.u8());
        if (!r.ok()) return false;
        if (kind == 'n') {
            v.kind = TupleValue::Kind::kNull;
        } else if (kind == 'u') {
            v.kind = TupleValue::Kind::kUnchangedToast;
        } else if (kind == 't') {
            v.kind = TupleValue::Kind::kText;
            const uint32_t len = r.u32();
            if (!r.ok()) return false;
            v.text = r.bytes(len);
            if (!r.ok()) return false;
        } else {
            return false;  // 'b' (binary) is protocol 2 with binary on: never asked for
        }
        out.push_back(std::move(v));
    }
    return true;
}

}  // namespace

std::string format_lsn(Lsn lsn) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32), static_cast<unsigned>(lsn & 0xffffffff));
    return buf;
}

std::optional<Lsn> parse_lsn(std::string_view text) {
    return knowledge::parse_lsn(text);
}

Result<std::variant<XLogData, Keepalive>> decode_copy_data(std::string_view bytes) {
    if (bytes.empty()) return bad("an empty CopyData message");
    Reader r(bytes.substr(1));
    if (bytes[0] == 'w') {
        XLogData x;
        x.wal_start = r.u64();
        x.wal_end = r.u64();
        x.send_time = r.i64();
        if (!r.ok()) return bad("a truncated XLogData header");
        x.payload = r.rest();
        return std::variant<XLogData, Keepalive>(x);
    }
    if (bytes[0] == 'k') {
        Keepalive k;
        k.wal_end = r.u64();
        k.send_time = r.i64();
        k.reply_requested = r.u8() != 0;
        if (!r.ok()) return bad("a truncated keepalive");
        return std::variant<XLogData, Keepalive>(k);
    }
    return bad(std::string("an unknown CopyData message '") + bytes[0] + "'");
}

std::string encode_standby_status(Lsn written, Lsn flushed, Lsn applied, int64_t now_pg_us, bool reply_requested) {
    std::string out = "r";
    put(out, written, 8);
    put(out, flushed, 8);
    put(out, applied, 8);
    put(out, static_cast<uint64_t>(now_pg_us), 8);
    out.push_back(reply_requested ? 1 : 0);
    return out;
}

Result<Message> decode_message(std::string_view bytes) {
    if (bytes.empty()) return bad("an empty message");
    Reader r(bytes.substr(1));
    const char type = bytes[0];
    switch (type) {
        case 'B': {
            Begin b;
            b.final_lsn = r.u64();
            b.commit_time = r.i64();
            b.xid = r.u32();
            if (!r.ok() || !r.at_end()) return bad("a malformed Begin");
            return Message(b);
        }
        case 'C': {
            Commit c;
            r.u8();  // flags (unused)
            c.commit_lsn = r.u64();
            c.end_lsn = r.u64();
            c.commit_time = r.i64();
            if (!r.ok() || !r.at_end()) return bad("a malformed Commit");
            return Message(c);
        }
        case 'R': {
            Relation rel;
            rel.id = r.u32();
            rel.schema = r.cstring();
            rel.name = r.cstring();
            rel.replica_identity = static_cast<char>(r.u8());
            const uint16_t n = r.u16();
            if (!r.ok()) return bad("a malformed Relation");
            for (uint16_t i = 0; i < n; ++i) {
                RelationColumn c;
                c.key = (r.u8() & 1) != 0;
                c.name = r.cstring();
                c.type_oid = r.u32();
                c.type_modifier = static_cast<int32_t>(r.u32());
                if (!r.ok()) return bad("a malformed Relation column");
                rel.columns.push_back(std::move(c));
            }
            if (!r.at_end()) return bad("trailing bytes after a Relation");
            return Message(std::move(rel));
        }
        case 'I': {
            Insert ins;
            ins.relation = r.u32();
            if (static_cast<char>(r.u8()) != 'N' || !r.ok() || !read_tuple(r, ins.row) || !r.at_end())
                return bad("a malformed Insert");
            return Message(std::move(ins));
        }
        case 'U': {
            Update up;
            up.relation = r.u32();
            char kind = static_cast<char>(r.u8());
            if (!r.ok()) return bad("a malformed Update");
            if (kind == 'K' || kind == 'O') {
                up.old_kind = kind;
                if (!read_tuple(r, up.old_row)) return bad("a malformed Update (old row)");
                kind = static_cast<char>(r.u8());
            }
            if (kind != 'N' || !r.ok() || !read_tuple(r, up.row) || !r.at_end()) return bad("a malformed Update");
            return Message(std::move(up));
        }
        case 'D': {
            Delete del;
            del.relation = r.u32();
            del.old_kind = static_cast<char>(r.u8());
            if (!r.ok() || (del.old_kind != 'K' && del.old_kind != 'O') || !read_tuple(r, del.old_row) ||
                !r.at_end())
                return bad("a malformed Delete");
            return Message(std::move(del));
        }
        case 'T': {
            Truncate t;
            const uint32_t n = r.u32();
            r.u8();  // options
            if (!r.ok() || n > bytes.size()) return bad("a malformed Truncate");
            for (uint32_t i = 0; i < n; ++i) t.relations.push_back(r.u32());
            if (!r.ok() || !r.at_end()) return bad("a malformed Truncate");
            return Message(std::move(t));
        }
        case 'O':  // Origin
        case 'Y':  // Type
        case 'M':  // a logical decoding message
            return Message(Other{});
        default:
            return bad(std::string("an unknown message type '") + type + "'");
    }
}

}  // namespace assistd::cdc::pg
