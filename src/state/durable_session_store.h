#pragma once
// SessionStore on RocksDB. Every change is written to RocksDB's write-ahead
// log and synced before the call returns (acknowledgement = durable):
//   - Durability::kSyncEachWrite: one synced RocksDB write per change, made
//     under the session's lock;
//   - Durability::kGroupCommit: changes join a leader/follower group commit
//     (group_commit_log.h): one synced write covers every change that arrived
//     while the previous one was syncing, and nobody waits for a timer.
// Layout (keys): "d/<id>" snapshot (log position + document encoding),
// "l/<id>/<seq>" log of deltas since the snapshot, "t/<id>" tombstone.
// A snapshot is written every `snapshot_every` changes of a session, in the
// same atomic batch that drops the log entries it covers. A session's document
// is its snapshot with the log replayed over it: start-up does that for each
// session, and so does the first use of a session that the document cache
// (least recently used first, bounded in bytes) had dropped.
// A failed write or fsync is not acknowledged, and from then on the store
// refuses every write until it is reopened: after a failed fsync the kernel
// may have dropped the unsynced pages, so no later sync can be trusted to
// cover them. Reads go on (a failed write may still show: its fate on disk is
// unknown until the restart).
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "common/clock.h"
#include "state/session_document.h"
#include "state/session_store.h"

namespace rocksdb {
class DB;
class Env;
}

namespace assistd::state {

class GroupCommitLog;

struct DurableSessionStoreOptions {
    std::string path;
    crdt::ReplicaId replica_id = 0;  // this instance; must be unique in the cluster and non-zero
    enum class Durability { kSyncEachWrite, kGroupCommit };
    Durability durability = Durability::kGroupCommit;
    int snapshot_every = 64;  // changes per session between snapshots
    // Documents held in memory, in the bytes they count (Document::memory_bytes); beyond it the
    // least recently used go and are read back from disk when used again.
    size_t cache_bytes = size_t{64} << 20;
    // RocksDB's memory: each of its (at most two) memtables, and its block cache.
    size_t memtable_bytes = size_t{64} << 20;
    size_t block_cache_bytes = size_t{8} << 20;
    // Where RocksDB keeps its files; null: the real file system. Simulations
    // pass an in-memory env (rocksdb::NewMemEnv) that outlives the store, so a
    // "restart" reopens the same files without touching the disk.
    rocksdb::Env* env = nullptr;
};

class DurableSessionStore final : public SessionStore {
public:
    static Result<std::unique_ptr<DurableSessionStore>> open(const DurableSessionStoreOptions& options, Clock& clock);
    ~DurableSessionStore() override;

    Status create(std::string_view id, std::string_view tenant, std::string_view title) override;
    Result<Session> get(std::string_view id) override;
    Result<Message> append_message(std::string_view id, const MessageInput& message) override;
    Status update_metadata(std::string_view id, std::string_view key, std::string_view value) override;
    Status add_usage(std::string_view id, int64_t prompt_tokens, int64_t completion_tokens) override;
    Status set_summary(std::string_view id, std::string_view summary) override;
    Status remove(std::string_view id) override;
    std::vector<std::string> list_by_tenant(std::string_view tenant) override;
    Result<crdt::VersionVector> version(std::string_view id) override;
    Result<std::string> changes_since(std::string_view id, const crdt::VersionVector& since) override;
    Status apply(std::string_view id, std::string_view delta) override;
    // Writes every delta, then waits for one fsync covering them all.
    std::vector<Status> apply_all(
        const std::vector<std::pair<std::string_view, std::string_view>>& items) override;
    bool deleted(std::string_view id) override;
    std::vector<SessionVersion> list_versions() override;
    uint64_t subscribe(Subscriber subscriber) override;
    void unsubscribe(uint64_t subscription) override;

    size_t session_count() const;
    // Documents in memory now, and the bytes they count.
    size_t cached_documents() const;
    size_t cached_bytes() const;

  private:
    struct Entry {
        std::mutex mu;
        std::unique_ptr<SessionDocument> doc;  // null: not in the cache (or removed)
        bool removed = false;
        std::string tenant;
        crdt::VersionVector version;  // the document's, also while it is not in the cache
        uint64_t next_seq = 1;        // next log sequence number
        uint64_t since_snapshot = 0;
        uint64_t last_ticket = 0;  // group commit of the last write: kept in the cache until synced
        // Taken out of the map again: an apply() made it for a delta that added
        // nothing (rejected, or buffered for missing history); look the id up anew.
        bool orphaned = false;
        // In the cache's recency list (changed under both this entry's lock and cache_mu_).
        bool in_cache = false;
        size_t cached_bytes = 0;
        std::list<std::shared_ptr<Entry>>::iterator lru;
    };
    // A session as its snapshot and log on disk make it.
    struct Loaded {
        std::unique_ptr<SessionDocument> doc;
        uint64_t next_seq = 1;
        uint64_t log_records = 0;
    };

    DurableSessionStore(DurableSessionStoreOptions options, Clock& clock);
    Status recover();
    Result<Loaded> load(std::string_view id);
    // The entry lock held: reads the document back from disk if the cache dropped it.
    Status ensure_loaded(std::string_view id, const std::shared_ptr<Entry>& entry);
    // The entry lock held: the document was used (and changed: `resized`); it goes to the
    // front of the cache.
    void cache_use(const std::shared_ptr<Entry>& entry, bool resized);
    void cache_forget(Entry& entry);  // the entry lock held: its document is gone
    // Drops least recently used documents until the cache fits its budget; skips those in use,
    // with writes not yet synced or with changes buffered for missing history.
    void evict_over_budget();
    std::shared_ptr<Entry> find(std::string_view id) const;
    bool is_deleted(std::string_view id) const;
    // Logs the doc's changes since `before` (the entry lock held), then waits until durable.
    Status persist(std::string_view id, const std::shared_ptr<Entry>& entry,
                   const crdt::VersionVector& before, std::unique_lock<std::mutex>& lock);
    // persist() without the wait: the group-commit ticket to wait for (0: synced already).
    Result<uint64_t> persist_unsynced(std::string_view id, const std::shared_ptr<Entry>& entry,
                                      const crdt::VersionVector& before,
                                      std::unique_lock<std::mutex>& lock);
    // apply() up to the write; `ticket` is what to wait for, `event` whether to notify (and how).
    enum class Applied { kNothing, kCreated, kChanged };
    Status apply_unsynced(std::string_view id, std::string_view delta, uint64_t& ticket,
                          Applied& applied);
    // Ok, or why the store takes no more writes.
    Status check_writable();
    // The first failure stops every later write (and is logged once); returns it for the caller.
    Error stop_writes(const Error& cause);
    // Writes what `fill` puts into a WriteBatch: synced at once (ticket 0), or
    // added to the group commit (the ticket to wait for).
    template <typename Fill>
    Result<uint64_t> write(Fill&& fill);
    Status wait_synced(uint64_t ticket);
    void notify(SessionEvent::Kind kind, std::string_view id, bool remote);
    template <typename Fn>
    Status mutate(std::string_view id, Fn&& fn);

    DurableSessionStoreOptions options_;
    Clock& clock_;
    std::unique_ptr<rocksdb::DB> db_;

    mutable std::shared_mutex map_mu_;
    std::unordered_map<std::string, std::shared_ptr<Entry>> sessions_;
    std::set<std::string> deleted_;
    std::map<std::string, std::set<std::string>, std::less<>> by_tenant_;

    // The document cache, most recently used first; lock order: an entry's mu, then cache_mu_.
    mutable std::mutex cache_mu_;
    std::list<std::shared_ptr<Entry>> lru_;
    size_t cached_bytes_ = 0;

    std::mutex compact_mu_;  // remove()'s compactions, one at a time

    std::mutex sub_mu_;
    std::map<uint64_t, Subscriber> subscribers_;
    uint64_t next_subscription_ = 1;

    std::unique_ptr<GroupCommitLog> log_;  // kGroupCommit only
    std::mutex failure_mu_;
    Status write_failure_;  // the first failed write or fsync: no write is taken after it
};

}  // namespace assistd::state
