#pragma once
// The session store: every conversation is a replicated JSON CRDT document
// (see session_document.h). This is the seam the serving and cluster layers
// use; DurableSessionStore (RocksDB) implements it.
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "state/crdt/version_vector.h"

namespace assistd::state {

// A session's key in the store: room for a tenant name, ':' and a session id (tenant_sessions.h).
inline constexpr size_t kMaxSessionKeyLength = 256;

struct MessageInput {
    std::string role;     // "system", "user", "assistant", "tool"
    std::string content;
};

struct Message {
    std::string id;       // "<author replica>-<lamport>", unique across replicas
    std::string role;
    std::string content;
    int64_t created_at_ms = 0;
    uint64_t author = 0;  // replica that appended it
};

struct Session {
    std::string id;
    std::string tenant;
    std::string title;
    int64_t created_at_ms = 0;
    std::vector<Message> messages;
    std::map<std::string, std::string> metadata;
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
    std::string summary;
};

// What a replica holds of one session: its version, or that it was deleted.
struct SessionVersion {
    std::string id;
    crdt::VersionVector version;  // empty when deleted
    bool deleted = false;
};

struct SessionEvent {
    enum class Kind { kCreated, kChanged, kDeleted };
    Kind kind;
    std::string session_id;
    bool remote;  // came in through apply()
};

class SessionStore {
public:
    virtual ~SessionStore() = default;

    virtual Status create(std::string_view id, std::string_view tenant, std::string_view title) = 0;
    virtual Result<Session> get(std::string_view id) = 0;
    virtual Result<Message> append_message(std::string_view id, const MessageInput& message) = 0;
    virtual Status update_metadata(std::string_view id, std::string_view key, std::string_view value) = 0;
    virtual Status add_usage(std::string_view id, int64_t prompt_tokens, int64_t completion_tokens) = 0;
    virtual Status set_summary(std::string_view id, std::string_view summary) = 0;
    // Gone for good: the deletion replicates as a tombstone and the data is dropped.
    virtual Status remove(std::string_view id) = 0;
    virtual std::vector<std::string> list_by_tenant(std::string_view tenant) = 0;

    // Replication: an opaque delta with what `since` lacks (or the tombstone),
    // and its application (idempotent, any order).
    virtual Result<crdt::VersionVector> version(std::string_view id) = 0;
    virtual Result<std::string> changes_since(std::string_view id, const crdt::VersionVector& since) = 0;
    virtual Status apply(std::string_view id, std::string_view delta) = 0;
    // Several deltas at once (a replication batch): one status per item, in
    // order, each as apply() would return it. A store may make them durable
    // together (one fsync) instead of one after the other.
    virtual std::vector<Status> apply_all(
        const std::vector<std::pair<std::string_view, std::string_view>>& items) {
        std::vector<Status> out;
        out.reserve(items.size());
        for (const auto& [id, delta] : items) out.push_back(apply(id, delta));
        return out;
    }
    // Deleted for good (a tombstone is held).
    virtual bool deleted(std::string_view id) = 0;
    // Every session held, deleted ones included, sorted by id: anti-entropy
    // compares these between replicas.
    virtual std::vector<SessionVersion> list_versions() = 0;

    // Called after every acknowledged change, on the writer's thread.
    using Subscriber = std::function<void(const SessionEvent&)>;
    virtual uint64_t subscribe(Subscriber subscriber) = 0;
    virtual void unsubscribe(uint64_t subscription) = 0;
};

}  // namespace assistd::state
