#include "knowledge/retrieval.h"

#include <set>

#include "knowledge/names.h"

namespace assistd::knowledge {
namespace {

constexpr size_t kMaxNgram = 4;
constexpr size_t kMaxFanout = 64;

std::string node_line(const Node& n) {
    std::string out = n.ref.label + ":" + n.ref.key;
    if (!n.properties.empty()) {
        out += " {";
        bool first = true;
        for (const auto& [k, v] : n.properties) {
            if (!first) out += ", ";
            first = false;
            out += k + ": " + v;
        }
        out += "}";
    }
    return out;
}

std::string edge_line(const Edge& e) {
    std::string out = e.from.label + ":" + e.from.key + " -[" + e.type + "]-> " + e.to.label + ":" + e.to.key;
    if (!e.properties.empty()) {
        out += " {";
        bool first = true;
        for (const auto& [k, v] : e.properties) {
            if (!first) out += ", ";
            first = false;
            out += k + ": " + v;
        }
        out += "}";
    }
    return out;
}

}  // namespace

std::string Context::text() const {
    if (facts.empty()) return "";
    std::string out = "Facts from the knowledge graph";
    if (!positions.empty()) {
        out += " (as of ";
        bool first = true;
        for (const auto& [source, position] : positions) {
            if (!first) out += ", ";
            first = false;
            out += source + " " + position;
        }
        out += ")";
    }
    out += ":\n";
    for (const auto& f : facts) out += f + "\n";
    return out;
}

Context retrieve(const GraphStore::Reader& graph, std::string_view message, const RetrievalOptions& o) {
    Context c;
    c.positions = graph.positions();
    auto cost = [&](std::string_view line) {
        return o.count_tokens ? o.count_tokens(line) : (line.size() + 4) / 4;
    };
    // The entities: the longest n-grams first, so "Ada Lovelace" wins over "Ada".
    const auto words = name_words(message);
    std::set<NodeRef> seen;
    std::vector<bool> used(words.size(), false);
    for (size_t n = std::min(kMaxNgram, words.size()); n >= 1 && c.entities.size() < o.max_entities; --n) {
        for (size_t i = 0; i + n <= words.size() && c.entities.size() < o.max_entities; ++i) {
            bool overlaps = false;
            for (size_t k = i; k < i + n; ++k) overlaps |= used[k];
            if (overlaps) continue;
            std::string gram = words[i];
            for (size_t k = i + 1; k < i + n; ++k) gram += " " + words[k];
            const auto found = graph.named(gram);
            if (found.empty()) continue;
            for (size_t k = i; k < i + n; ++k) used[k] = true;
            for (const auto& ref : found)
                if (c.entities.size() < o.max_entities && seen.insert(ref).second) c.entities.push_back(ref);
        }
        if (n == 1) break;
    }
    // Breadth first from them; each node's line, then the edges that reach the next ring.
    std::set<std::string> written;
    auto add = [&](const std::string& line) {
        if (!written.insert(line).second) return true;
        const size_t t = cost(line) + 1;
        if (c.tokens + t > o.max_tokens) {
            c.truncated = true;
            return false;
        }
        c.tokens += t;
        c.facts.push_back(line);
        return true;
    };
    std::vector<NodeRef> ring = c.entities;
    for (const auto& ref : ring)
        if (auto node = graph.node(ref); node && !add(node_line(*node))) return c;
    for (int hop = 0; hop < o.hops && !ring.empty(); ++hop) {
        std::vector<NodeRef> next;
        for (const auto& ref : ring) {
            // Out-edges (the row's own references), then in-edges (rows that refer to
            // it), at most kMaxFanout of each: a hub's thousands of rows do not drown the rest.
            std::vector<Edge> edges = graph.out_edges(ref, kMaxFanout);
            auto in = graph.in_edges(ref, kMaxFanout + 1);
            if (in.size() > kMaxFanout) {
                in.resize(kMaxFanout);
                c.truncated = true;
            }
            for (auto& e : in) {
                for (auto& full : graph.out_edges(e.from))  // the in-index holds no properties
                    if (full.type == e.type && full.to == e.to) e.properties = full.properties;
                edges.push_back(std::move(e));
            }
            for (const auto& e : edges) {
                const NodeRef& other = e.from == ref ? e.to : e.from;
                const auto node = graph.node(other);
                if (!node) continue;  // a reference to a row that is gone
                if (!add(edge_line(e))) return c;
                if (seen.insert(other).second) {
                    if (!add(node_line(*node))) return c;
                    next.push_back(other);
                }
            }
        }
        ring = std::move(next);
    }
    return c;
}

}  // namespace assistd::knowledge
