#pragma once
// Row changes onto the graph: each mapped table is a node label (a row is a
// node, keyed by its primary key columns, its columns the properties) and
// each foreign key a typed edge from the row's node to the node of the row it
// references. A transaction becomes one GraphBatch. Stateless: what a change
// depends on (the properties an update did not resend, the edges a foreign
// key had) is resolved by the store inside the batch (knowledge/graph.h).
#include <map>
#include <string>
#include <vector>

#include "cdc/change.h"
#include "common/result.h"
#include "knowledge/graph.h"

namespace assistd::cdc {

struct ForeignKey {
    std::vector<std::string> columns;      // in this table
    std::string ref_table;                 // "schema.table" or "table"
    std::vector<std::string> ref_columns;  // the referenced table's key, in its order
    std::string type;                      // the edge type (default: from the column name)
};

struct TableMapping {
    std::string table;              // "schema.table" or "table" (as the source names it)
    std::string label;              // default: the table's name
    std::vector<std::string> key;   // default: the primary key the source reports
    std::vector<std::string> properties;  // default (empty): every column
    std::vector<ForeignKey> edges;
};

class GraphMapping {
  public:
    // Tables not listed are mapped by default when `map_all` (label = table
    // name, key from the stream, every column a property, no edges).
    GraphMapping(std::vector<TableMapping> tables, bool map_all);

    // The batch for one transaction (source and position filled in).
    Result<knowledge::GraphBatch> map(const SourceTransaction& txn, const std::string& source) const;

    // The node a row's key columns name.
    static std::string key_text(const std::vector<std::string>& values);
    // "account_id" -> "ACCOUNT", "owner" -> "OWNER".
    static std::string default_edge_type(const std::vector<std::string>& columns);

    const TableMapping* find(const std::string& schema, const std::string& table) const;
    // The label of a (referenced) table: its mapping's, else its name.
    std::string label_of(const std::string& table) const;

  private:
    std::vector<TableMapping> tables_;
    bool map_all_;
};

}  // namespace assistd::cdc
