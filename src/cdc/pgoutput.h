#pragma once
// PostgreSQL logical replication, protocol 1 of the pgoutput plugin: the
// CopyBoth framing (XLogData 'w', primary keepalive 'k', standby status
// update 'r') and the messages inside XLogData (Begin, Relation, Insert,
// Update, Delete, Truncate, Commit; Origin and Type are read and passed
// over). Everything is big-endian; values arrive as text. Pure decoding, no
// I/O: every length is checked, a malformed message is an error, never a
// crash (fuzz/pgoutput_fuzz.cpp).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"

namespace assistd::cdc::pg {

using Lsn = uint64_t;
std::string format_lsn(Lsn lsn);                         // "16/B374D848"
std::optional<Lsn> parse_lsn(std::string_view text);     // the same form

// Microseconds since 2000-01-01 (PostgreSQL's epoch) <-> since 1970.
constexpr int64_t kPgEpochUnixUs = 946'684'800'000'000;

struct XLogData {
    Lsn wal_start = 0, wal_end = 0;
    int64_t send_time = 0;  // PostgreSQL microseconds
    std::string_view payload;
};
struct Keepalive {
    Lsn wal_end = 0;
    int64_t send_time = 0;
    bool reply_requested = false;
};
Result<std::variant<XLogData, Keepalive>> decode_copy_data(std::string_view bytes);
// 'r': written, flushed and applied up to these positions.
std::string encode_standby_status(Lsn written, Lsn flushed, Lsn applied, int64_t now_pg_us, bool reply_requested);

struct RelationColumn {
    bool key = false;  // part of the replica identity (the primary key by default)
    std::string name;
    uint32_t type_oid = 0;
    int32_t type_modifier = 0;
};
struct Relation {
    uint32_t id = 0;
    std::string schema, name;
    char replica_identity = 'd';  // d default, n nothing, f full, i index
    std::vector<RelationColumn> columns;
};

struct TupleValue {
    enum class Kind { kNull, kUnchangedToast, kText };
    Kind kind = Kind::kNull;
    std::string text;
};
using Tuple = std::vector<TupleValue>;

struct Begin {
    Lsn final_lsn = 0;
    int64_t commit_time = 0;
    uint32_t xid = 0;
};
struct Commit {
    Lsn commit_lsn = 0, end_lsn = 0;
    int64_t commit_time = 0;
};
struct Insert {
    uint32_t relation = 0;
    Tuple row;
};
struct Update {
    uint32_t relation = 0;
    char old_kind = 0;  // 0: no old row sent; 'K' key columns only; 'O' the whole old row
    Tuple old_row;
    Tuple row;
};
struct Delete {
    uint32_t relation = 0;
    char old_kind = 'K';
    Tuple old_row;
};
struct Truncate {
    std::vector<uint32_t> relations;
};
struct Other {};  // Origin, Type, logical messages: nothing the graph needs

using Message = std::variant<Begin, Commit, Relation, Insert, Update, Delete, Truncate, Other>;
Result<Message> decode_message(std::string_view bytes);

}  // namespace assistd::cdc::pg
