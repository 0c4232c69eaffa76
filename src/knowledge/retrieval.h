#pragma once
// From a message to a context block: the entities the message names (the
// graph's name index, n-grams of its words), their neighbourhood up to
// `hops` edges away (both directions), written as compact facts —
//   accounts:1 {name: Ada, balance: 1001.5}
//   trades:10 -[ACCOUNT]-> accounts:1
// — nearest first, until the token budget is spent. Read from one snapshot,
// so the facts and the positions they reflect belong to one moment.
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "knowledge/graph_store.h"

namespace assistd::knowledge {

struct RetrievalOptions {
    int hops = 1;
    size_t max_tokens = 512;
    size_t max_entities = 16;  // nodes the message may name
    // Tokens a line costs; default: one per four bytes, rounded up.
    std::function<size_t(std::string_view)> count_tokens;
};

struct Context {
    std::vector<NodeRef> entities;  // what the message named, in the order found
    std::vector<std::string> facts;  // the lines, nearest first
    size_t tokens = 0;
    bool truncated = false;          // the budget cut facts off
    std::map<std::string, std::string> positions;  // source -> position the graph reflects
    // The block for the prompt ("" when no entity was found).
    std::string text() const;
};

Context retrieve(const GraphStore::Reader& graph, std::string_view message, const RetrievalOptions& options);

}  // namespace assistd::knowledge
