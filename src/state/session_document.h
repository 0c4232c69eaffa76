#pragma once
// A conversation as a JSON CRDT document:
//   { "tenant": str, "title": str, "created_at": int,
//     "messages": [ {"id", "role", "content", "created_at", "author"} ... ],
//     "metadata": { str: str }, "usage": { "prompt_tokens": counter,
//     "completion_tokens": counter }, "summary": register }
#include <string>
#include <string_view>

#include "common/result.h"
#include "state/crdt/document.h"
#include "state/session_store.h"

namespace assistd::state {

class SessionDocument {
public:
    explicit SessionDocument(crdt::Document doc) : doc_(std::move(doc)) {}

    // Fills a fresh document with the session skeleton.
    static Result<SessionDocument> create(crdt::ReplicaId replica, std::string_view tenant, std::string_view title,
                                          int64_t now_ms);

    Result<Message> append_message(const MessageInput& input, int64_t now_ms);
    Status update_metadata(std::string_view key, std::string_view value);
    Status add_usage(int64_t prompt_tokens, int64_t completion_tokens);
    Status set_summary(std::string_view summary);
    Result<Session> read(std::string_view id);
    std::string tenant() const;

    crdt::Document& doc() { return doc_; }

private:
    Result<crdt::ObjId> child(std::string_view key, crdt::ObjType type) const;
    crdt::Document doc_;
};

}  // namespace assistd::state
