#include "cdc/graph_mapping.h"

#include <algorithm>
#include <cctype>

namespace assistd::cdc {
namespace {

const ColumnValue* find_column(const std::vector<ColumnValue>& row, const std::string& name) {
    for (const auto& c : row)
        if (c.column == name) return &c;
    return nullptr;
}

// The table part of "schema.table".
std::string bare(const std::string& table) {
    const size_t dot = table.rfind('.');
    return dot == std::string::npos ? table : table.substr(dot + 1);
}

}  // namespace

GraphMapping::GraphMapping(std::vector<TableMapping> tables, bool map_all)
    : tables_(std::move(tables)), map_all_(map_all) {
    for (auto& t : tables_)
        if (t.label.empty()) t.label = bare(t.table);
}

std::string GraphMapping::key_text(const std::vector<std::string>& values) {
    // '|' joins the parts; a '|' or '\' inside one is escaped, so keys never collide.
    std::string out;
    for (size_t i = 0; i < values.size(); ++i) {
        if (i) out += '|';
        for (char c : values[i]) {
            if (c == '|' || c == '\\') out += '\\';
            out += c;
        }
    }
    return out;
}

std::string GraphMapping::default_edge_type(const std::vector<std::string>& columns) {
    std::string base = columns.empty() ? std::string("REF") : columns.front();
    for (const char* suffix : {"_id", "_key", "_code"}) {
        const std::string s = suffix;
        if (base.size() > s.size() && base.ends_with(s)) {
            base.resize(base.size() - s.size());
            break;
        }
    }
    std::string out;
    for (char c : base) out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

const TableMapping* GraphMapping::find(const std::string& schema, const std::string& table) const {
    const std::string qualified = schema.empty() ? table : schema + "." + table;
    for (const auto& t : tables_)
        if (t.table == qualified) return &t;
    for (const auto& t : tables_)
        if (t.table == table) return &t;
    return nullptr;
}

std::string GraphMapping::label_of(const std::string& table) const {
    for (const auto& t : tables_)
        if (t.table == table || bare(t.table) == bare(table)) return t.label;
    return bare(table);
}

Result<knowledge::GraphBatch> GraphMapping::map(const SourceTransaction& txn, const std::string& source) const {
    using knowledge::GraphChange;
    knowledge::GraphBatch batch;
    batch.source = source;
    batch.position = txn.position;
    for (const RowChange& row : txn.rows) {
        TableMapping fallback;
        const TableMapping* m = find(row.schema, row.table);
        if (!m) {
            if (!map_all_) continue;  // not a mapped table
            fallback.table = row.table;
            fallback.label = row.table;
            m = &fallback;
        }
        if (row.op == RowChange::Op::kTruncate) {
            GraphChange c;
            c.kind = GraphChange::Kind::kDeleteLabel;
            c.node.ref.label = m->label;
            batch.changes.push_back(std::move(c));
            continue;
        }
        const std::vector<std::string>& key_columns = m->key.empty() ? row.key_columns : m->key;
        if (key_columns.empty())
            return make_error(ErrorCode::kInvalidArgument,
                              "table " + row.schema + "." + row.table +
                                  " has no primary key: name its key columns in graph.nodes[].key");
        auto key_of = [&](const std::vector<ColumnValue>& values) -> Result<std::string> {
            std::vector<std::string> parts;
            for (const auto& k : key_columns) {
                const ColumnValue* c = find_column(values, k);
                if (!c || !c->text)
                    return make_error(ErrorCode::kCorrupt, "a change of " + row.table + " lacks its key column " + k);
                parts.push_back(*c->text);
            }
            return key_text(parts);
        };
        const bool has_before = !row.before.empty();
        if (row.op == RowChange::Op::kDelete || (row.op == RowChange::Op::kUpdate && has_before)) {
            auto old_key = key_of(row.before);
            if (!old_key.ok()) return old_key.error();
            bool moved = row.op == RowChange::Op::kDelete;
            if (!moved) {
                auto new_key = key_of(row.after);
                if (!new_key.ok()) return new_key.error();
                moved = *new_key != *old_key;
            }
            if (moved) {
                GraphChange c;
                c.kind = GraphChange::Kind::kDeleteNode;
                c.node.ref = {m->label, *old_key};
                batch.changes.push_back(std::move(c));
            }
        }
        if (row.op == RowChange::Op::kDelete) continue;

        auto key = key_of(row.after);
        if (!key.ok()) return key.error();
        GraphChange node;
        node.kind = GraphChange::Kind::kUpsertNode;
        node.node.ref = {m->label, *key};
        for (const auto& c : row.after) {
            if (!m->properties.empty() &&
                std::find(m->properties.begin(), m->properties.end(), c.column) == m->properties.end())
                continue;
            if (c.unchanged)
                node.keep.push_back(c.column);
            else if (c.text)
                node.node.properties[c.column] = *c.text;
        }
        batch.changes.push_back(std::move(node));
        for (const auto& fk : m->edges) {
            GraphChange e;
            e.kind = GraphChange::Kind::kSetEdges;
            e.edge.from = {m->label, *key};
            e.edge.type = fk.type.empty() ? default_edge_type(fk.columns) : fk.type;
            std::vector<std::string> parts;
            bool complete = true, unchanged = false;
            for (const auto& col : fk.columns) {
                const ColumnValue* c = find_column(row.after, col);
                if (c && c->unchanged) unchanged = true;
                if (!c || !c->text) {
                    complete = false;
                    break;
                }
                parts.push_back(*c->text);
            }
            if (unchanged) continue;  // the update did not touch it
            if (complete) e.targets.push_back({label_of(fk.ref_table), key_text(parts)});
            batch.changes.push_back(std::move(e));  // no targets: a NULL reference, no edge
        }
    }
    return batch;
}

}  // namespace assistd::cdc
