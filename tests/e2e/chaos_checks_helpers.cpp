#include "chaos_checks.h"

#include <cstdlib>
#include <map>

#include "local_fleet.h"

namespace assistd::e2e {

using nlohmann::json;

namespace {

// Checks one replica's copy against what was acknowledged, without context; "" when it holds.
std::string check_replica_order(const SessionLog& log, const std::string& id, int node,
                                const json& doc) {
    const std::string where = "session " + id + ", node " + std::to_string(node) + ": ";
    if (!doc.is_object() || !doc["messages"].is_array()) return where + "not a session document";
    const json& msgs = doc["messages"];
    // Position of each user message (acknowledged contents are unique).
    std::map<std::string, std::vector<size_t>> users;
    for (size_t i = 0; i < msgs.size(); ++i)
        if (msgs[i]["role"] == "user") users[msgs[i]["content"].get<std::string>()].push_back(i);
    size_t prev = 0;
    for (size_t t = 0; t < log.acked.size(); ++t) {
        const AckedTurn& turn = log.acked[t];
        const auto it = users.find(turn.user);
        if (it == users.end())
            return where + "acknowledged message '" + turn.user + "' (turn " +
                   std::to_string(t + 1) + " of " + std::to_string(log.acked.size()) +
                   ", answered by node " + std::to_string(turn.node) +
                   ") is missing; the copy has " + std::to_string(msgs.size()) + " messages";
        if (it->second.size() != 1)
            return where + "acknowledged message '" + turn.user + "' is there " +
                   std::to_string(it->second.size()) + " times";
        const size_t at = it->second[0];
        if (t > 0 && at <= prev)
            return where + "acknowledged message '" + turn.user + "' (at " + std::to_string(at) +
                   ") is not after the previous acknowledged one '" + log.acked[t - 1].user +
                   "' (at " + std::to_string(prev) + ")";
        // Its answer: after it, before the next acknowledged question.
        size_t end = msgs.size();
        if (t + 1 < log.acked.size()) {
            const auto next = users.find(log.acked[t + 1].user);
            if (next != users.end() && next->second.size() == 1) end = next->second[0];
        }
        bool answered = false;
        for (size_t i = at + 1; i < end && !answered; ++i)
            answered = msgs[i]["role"] == "assistant" && msgs[i]["content"] == turn.answer;
        if (!answered)
            return where + "the acknowledged answer to '" + turn.user + "' (" +
                   json(turn.answer).dump() +
                   ") is not between its question and the next acknowledged one";
        prev = at;
    }
    return "";
}

// A copy's messages and the acknowledged turns, compactly, for failure messages.
std::string describe(const SessionLog& log, const json& msgs) {
    std::string out = "; the copy: [";
    for (size_t i = 0; i < msgs.size(); ++i) {
        if (i) out += ", ";
        out += msgs[i]["role"] == "user" ? "user " : "assistant ";
        out += json(msgs[i]["content"]).dump();
    }
    out += "]; acknowledged:";
    for (const auto& t : log.acked) {
        out += " '";
        out += t.user;
        out += "' -> ";
        out += json(t.answer).dump();
        out += " (node ";
        out += std::to_string(t.node);
        out += ")";
    }
    return out;
}

}  // namespace

int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

LocalCopy local_copy(uint16_t port, const std::string& id) {
    const Reply r = http(port, "GET", "/v1/sessions/" + id + "?local=true");
    LocalCopy c;
    c.status = r.status;
    if (r.status == 200) c.doc = r.json_body();
    return c;
}

// Checks one replica's copy against what was acknowledged; "" when it holds.
std::string check_replica(const SessionLog& log, const std::string& id, int node, const json& doc) {
    std::string e = check_replica_order(log, id, node, doc);
    if (!e.empty() && doc.is_object() && doc["messages"].is_array())
        e += describe(log, doc["messages"]);
    return e;
}

bool holds_every_acknowledged_turn(const SessionLog& log, const json& doc) {
    if (!doc.is_object() || !doc["messages"].is_array()) return false;
    std::map<std::string, int> users, answers;
    for (const auto& m : doc["messages"])
        (m["role"] == "user" ? users : answers)[m["content"].get<std::string>()]++;
    for (const auto& t : log.acked)
        if (!users.count(t.user) || !answers.count(t.answer)) return false;
    return true;
}

std::string check_partial_copy(const SessionLog& log, const std::string& id, int node, const json& doc) {
    const std::string where = "session " + id + ", node " + std::to_string(node) + " (a copy behind): ";
    if (!doc.is_object() || !doc["messages"].is_array()) return where + "not a session document";
    std::map<std::string, std::vector<size_t>> users;
    const json& msgs = doc["messages"];
    for (size_t i = 0; i < msgs.size(); ++i)
        if (msgs[i]["role"] == "user") users[msgs[i]["content"].get<std::string>()].push_back(i);
    size_t prev = 0;
    bool any = false;
    for (const auto& t : log.acked) {
        const auto it = users.find(t.user);
        if (it == users.end()) continue;
        if (it->second.size() != 1)
            return where + "acknowledged message '" + t.user + "' is there " + std::to_string(it->second.size()) +
                   " times";
        if (any && it->second[0] <= prev)
            return where + "acknowledged message '" + t.user + "' is before an earlier acknowledged one" +
                   describe(log, msgs);
        prev = it->second[0];
        any = true;
    }
    return "";
}

}  // namespace assistd::e2e
