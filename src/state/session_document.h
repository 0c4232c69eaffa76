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

    // The author of every session's containers (messages, metadata, usage,
    // summary): a fixed replica id no node is given (node replicas are hashed
    // ids, a single node is 1). Those containers are one change with the same
    // lamports and bytes wherever it is made, so two creates of one session id
    // on nodes that had not seen each other make the same change, applied once,
    // and their messages land in one list (with per-replica containers, one
    // create's list would win the "messages" key and hide the other's).
    // Changing the skeleton's content breaks that across versions: it then
    // needs another replica id (a test pins the bytes).
    static constexpr crdt::ReplicaId kSkeletonReplica = ~crdt::ReplicaId{0};
    // The skeleton change as a delta (computed once).
    static const std::string& skeleton_delta();

    // A fresh document: the skeleton, then tenant, title and creation time
    // written by `replica` (concurrent creates: the largest id wins each).
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
