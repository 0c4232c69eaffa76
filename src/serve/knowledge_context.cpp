#include "serve/knowledge_context.h"

#include <nlohmann/json.hpp>

#include "knowledge/graph_store.h"
#include "knowledge/position.h"
#include "knowledge/retrieval.h"

namespace assistd::serve {

using nlohmann::json;

std::variant<std::optional<KnowledgeRequest>, KnowledgeError> parse_knowledge_field(const json& body) {
    const auto it = body.find("knowledge");
    if (it == body.end() || it->is_null() || (it->is_boolean() && !it->get<bool>()))
        return std::optional<KnowledgeRequest>();
    KnowledgeRequest r;
    if (it->is_boolean()) return std::optional<KnowledgeRequest>(r);
    if (!it->is_object())
        return KnowledgeError{400, "'knowledge' must be true, false or an object {hops, max_tokens, min_position, source, wait_ms}",
                              "knowledge", "invalid_type"};
    for (const auto& [key, value] : it->items()) {
        const std::string param = "knowledge." + key;
        auto integer = [&](int64_t lo, int64_t hi, int64_t& out) -> std::optional<KnowledgeError> {
            if (!value.is_number_integer() || value.get<int64_t>() < lo || value.get<int64_t>() > hi)
                return KnowledgeError{400, "'" + param + "' must be an integer from " + std::to_string(lo) + " to " +
                                               std::to_string(hi),
                                      param, "invalid_value"};
            out = value.get<int64_t>();
            return std::nullopt;
        };
        int64_t n = 0;
        if (key == "hops") {
            if (auto e = integer(0, 4, n)) return *e;
            r.hops = static_cast<int>(n);
        } else if (key == "max_tokens") {
            if (auto e = integer(16, 8192, n)) return *e;
            r.max_tokens = static_cast<size_t>(n);
        } else if (key == "wait_ms") {
            if (auto e = integer(0, 30000, n)) return *e;
            r.wait_ms = n;
        } else if (key == "min_position" || key == "source") {
            if (!value.is_string() || value.get<std::string>().empty())
                return KnowledgeError{400, "'" + param + "' must be a non-empty string", param, "invalid_type"};
            (key == "source" ? r.source : r.min_position) = value.get<std::string>();
        } else {
            return KnowledgeError{400, "unknown field '" + param + "': knowledge takes hops, max_tokens, min_position, source and wait_ms",
                                  param, "unknown_parameter"};
        }
    }
    if (!r.source.empty() && r.min_position.empty())
        return KnowledgeError{400, "'knowledge.source' names whose position 'knowledge.min_position' is: give both",
                              "knowledge.min_position", "invalid_value"};
    return std::optional<KnowledgeRequest>(r);
}

json KnowledgeUsed::to_json() const {
    return {{"positions", positions}, {"entities", entities}, {"facts", facts}, {"tokens", tokens}, {"truncated", truncated}};
}

std::variant<KnowledgeUsed, KnowledgeError> add_knowledge(knowledge::GraphStore& graph, const KnowledgeRequest& request,
                                                          std::vector<engine::ChatMessage>& messages,
                                                          const std::function<size_t(std::string_view)>& count_tokens) {
    if (!request.min_position.empty()) {
        std::string why;
        auto reached = [&](const std::map<std::string, std::string>& positions) {
            if (request.source.empty() && positions.size() > 1) {
                why = "the graph has several sources: name one in 'knowledge.source'";
                return true;  // nothing to wait for: refused below
            }
            const auto it = request.source.empty() ? positions.begin() : positions.find(request.source);
            if (it == positions.end()) return false;  // not started yet: wait
            const auto cmp = knowledge::position_reached(it->second, request.min_position);
            if (!cmp) {
                why = "'" + request.min_position + "' is not a position of source " + it->first + " (at " + it->second + ")";
                return true;
            }
            return *cmp;
        };
        const bool ok = graph.wait_for(reached, request.wait_ms);
        if (!why.empty()) return KnowledgeError{400, why, "knowledge.min_position", "invalid_value"};
        if (!ok) {
            std::string at;
            for (const auto& [source, position] : graph.read().positions()) at += (at.empty() ? "" : ", ") + source + " " + position;
            return KnowledgeError{503,
                                  "the knowledge graph has not applied " + request.min_position + " after " +
                                      std::to_string(request.wait_ms) + " ms (it is at " + (at.empty() ? "nothing yet" : at) +
                                      "); retry shortly",
                                  "knowledge.min_position", "knowledge_not_fresh"};
        }
    }
    std::string last_user;
    for (auto it = messages.rbegin(); it != messages.rend(); ++it)
        if (it->role == "user") {
            last_user = it->content;
            break;
        }
    knowledge::RetrievalOptions o;
    o.hops = request.hops;
    o.max_tokens = request.max_tokens;
    o.count_tokens = count_tokens;
    const auto context = knowledge::retrieve(graph.read(), last_user, o);
    KnowledgeUsed used;
    used.positions = context.positions;
    for (const auto& e : context.entities) used.entities.push_back(e.label + ":" + e.key);
    used.facts = context.facts.size();
    used.tokens = context.tokens;
    used.truncated = context.truncated;
    if (const std::string block = context.text(); !block.empty()) {
        if (!messages.empty() && messages.front().role == "system")
            messages.front().content += "\n\n" + block;
        else
            messages.insert(messages.begin(), engine::ChatMessage{"system", block});
    }
    return used;
}

}  // namespace assistd::serve
