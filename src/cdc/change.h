#pragma once
// What a source says happened, independent of the database: the row changes
// of one committed transaction, with column names as the stream gave them,
// and the position the pipeline resumes from after it.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace assistd::cdc {

struct ColumnValue {
    std::string column;
    std::optional<std::string> text;  // nullopt: NULL
    bool unchanged = false;           // an update left it as it was and did not send it (TOAST)
};

struct RowChange {
    enum class Op { kInsert, kUpdate, kDelete, kTruncate };  // kTruncate: every row of the table
    Op op = Op::kInsert;
    std::string schema;
    std::string table;
    std::vector<std::string> key_columns;  // the table's primary (replica identity) key
    std::vector<ColumnValue> before;       // update/delete: what the stream gives (the key at least)
    std::vector<ColumnValue> after;        // insert/update
};

struct SourceTransaction {
    std::string position;         // where to resume after it (an LSN, a GTID, file:offset)
    int64_t commit_time_us = 0;   // the source's commit time, Unix microseconds (0: unknown)
    std::vector<RowChange> rows;
};

}  // namespace assistd::cdc
