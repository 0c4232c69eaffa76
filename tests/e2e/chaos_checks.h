#pragma once
// What the chaos tests' clients saw of their sessions, and the checks of a
// node's own copy of a session against it (chaos_slow_test,
// chaos_overlap_slow_test).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace assistd::e2e {

struct AckedTurn {
    std::string user;
    std::string answer;
    int node = -1;           // the node that answered
    int prompt_tokens = -1;  // the answer's usage.prompt_tokens, when the test asked for it
};

// What the clients saw of one session; written by its one client only.
struct SessionLog {
    std::vector<AckedTurn> acked;
    int given_up = 0;  // turns that failed every attempt
};

// One node's own copy of a session: 200 and the document, or 404 (no copy).
struct LocalCopy {
    int status = 0;
    nlohmann::json doc;
};

// An integer from the environment (ASSISTD_CHAOS_*), else `fallback`.
int env_int(const char* name, int fallback);

// GET /v1/sessions/{id}?local=true: the node's copy, with no read of other nodes.
LocalCopy local_copy(uint16_t port, const std::string& id);

// Checks one copy against what was acknowledged: every acknowledged question
// there once, in the order acknowledged, each acknowledged answer between its
// question and the next acknowledged one. "" when it holds, else what is
// wrong with the copy and the acknowledged turns, compactly.
std::string check_replica(const SessionLog& log, const std::string& id, int node,
                          const nlohmann::json& doc);

// Whether the copy holds every acknowledged question and answer (a copy
// outside the session's replicas may be behind).
bool holds_every_acknowledged_turn(const SessionLog& log, const nlohmann::json& doc);

// A copy that is behind: the acknowledged questions it holds are there once
// each and in the order acknowledged. "" when that holds.
std::string check_partial_copy(const SessionLog& log, const std::string& id, int node,
                               const nlohmann::json& doc);

}  // namespace assistd::e2e
