#pragma once
// The property graph the assistant reads: nodes (a label and a key, unique
// together, with text properties) and typed, directed edges between them
// (with text properties). What a source transaction does to the graph is a
// GraphBatch, applied atomically with the source position it reaches.
#include <map>
#include <string>
#include <vector>

namespace assistd::knowledge {

// Properties by name; a NULL column is an absent property.
using Properties = std::map<std::string, std::string>;

struct NodeRef {
    std::string label;
    std::string key;  // the key columns' text, joined with '|' when several
    bool operator==(const NodeRef&) const = default;
    auto operator<=>(const NodeRef&) const = default;
};

struct Node {
    NodeRef ref;
    Properties properties;
};

struct Edge {
    NodeRef from;
    std::string type;
    NodeRef to;
    Properties properties;
};

struct GraphChange {
    enum class Kind {
        kUpsertNode,  // node: its properties replace the stored ones, but for `keep`
        kDeleteNode,  // node.ref; its out-edges go too
        kSetEdges,    // edge.from's out-edges of edge.type become exactly `targets`
        kUpsertEdge,  // edge
        kDeleteEdge,  // edge.from, edge.type, edge.to
        kDeleteLabel, // every node of node.ref.label, with their out-edges (a TRUNCATE)
    };
    Kind kind = Kind::kUpsertNode;
    Node node;
    std::vector<std::string> keep;  // kUpsertNode: properties kept as stored (a value the source did not resend)
    Edge edge;
    std::vector<NodeRef> targets;   // kSetEdges
};

// One source transaction: its changes in order, and the position after it.
struct GraphBatch {
    std::string source;    // the pipeline source's name
    std::string position;  // where the source resumes after this batch
    std::vector<GraphChange> changes;
};

}  // namespace assistd::knowledge
