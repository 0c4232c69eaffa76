#pragma once
// Knowledge in a chat turn (docs/knowledge.md): the request's `knowledge`
// field, the bounded wait for the source position it demands, and the
// context block the graph gives the latest user message, which goes before
// the conversation as a system part (appended to the first system message
// when there is one), through the model's chat template.
//
//   "knowledge": true                      defaults: 1 hop, 512 tokens
//   "knowledge": {"hops": 2, "max_tokens": 256,
//                 "min_position": "0/1A2B3C", "source": "pg", "wait_ms": 2000}
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/chat_template.h"

namespace assistd::knowledge {
class GraphStore;
}

namespace assistd::serve {

struct KnowledgeRequest {
    int hops = 1;
    size_t max_tokens = 512;
    std::string min_position;  // "" : no wait
    std::string source;        // whose position; may be left out when the graph has one source
    int64_t wait_ms = 2000;    // at most this long for min_position, then 503
};

// What went wrong, as the route answers it (400 bad field, 503 not reached).
struct KnowledgeError {
    int status = 400;
    std::string message;
    std::string param = "knowledge";
    std::string code = "invalid_value";
};

// body["knowledge"]: absent, null or false: nullopt.
std::variant<std::optional<KnowledgeRequest>, KnowledgeError> parse_knowledge_field(const nlohmann::json& body);

struct KnowledgeUsed {
    std::map<std::string, std::string> positions;  // what the facts reflect, per source
    std::vector<std::string> entities;             // "label:key"
    size_t facts = 0;
    size_t tokens = 0;
    bool truncated = false;
    nlohmann::json to_json() const;
};

// Waits for the position, retrieves for the last user message and puts the
// block into `messages`. `count_tokens`: the model's tokenizer.
std::variant<KnowledgeUsed, KnowledgeError> add_knowledge(knowledge::GraphStore& graph, const KnowledgeRequest& request,
                                                          std::vector<engine::ChatMessage>& messages,
                                                          const std::function<size_t(std::string_view)>& count_tokens);

}  // namespace assistd::serve
