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
// same atomic batch that drops the log entries it covers. Start-up loads each
// snapshot and replays the log over it.
// A failed write or fsync is not acknowledged, and from then on the store
// refuses every write until it is reopened: after a failed fsync the kernel
// may have dropped the unsynced pages, so no later sync can be trusted to
// cover them. Reads go on (a failed write may still show: its fate on disk is
// unknown until the restart).
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

private:
    struct Entry {
        std::mutex mu;
        std::unique_ptr<SessionDocument> doc;
        std::string tenant;
        uint64_t next_seq = 1;       // next log sequence number
        uint64_t since_snapshot = 0;
        // Taken out of the map again: an apply() made it for a delta that added
        // nothing (rejected, or buffered for missing history); look the id up anew.
        bool orphaned = false;
    };

    DurableSessionStore(DurableSessionStoreOptions options, Clock& clock);
    Status recover();
    std::shared_ptr<Entry> find(std::string_view id) const;
    bool is_deleted(std::string_view id) const;
    // Logs the doc's changes since `before` (the entry lock held), then waits until durable.
    Status persist(std::string_view id, Entry& entry, const crdt::VersionVector& before,
                   std::unique_lock<std::mutex>& lock);
    // persist() without the wait: the group-commit ticket to wait for (0: synced already).
    Result<uint64_t> persist_unsynced(std::string_view id, Entry& entry, const crdt::VersionVector& before,
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

    std::mutex compact_mu_;  // remove()'s compactions, one at a time

    std::mutex sub_mu_;
    std::map<uint64_t, Subscriber> subscribers_;
    uint64_t next_subscription_ = 1;

    std::unique_ptr<GroupCommitLog> log_;  // kGroupCommit only
    std::mutex failure_mu_;
    Status write_failure_;  // the first failed write or fsync: no write is taken after it
};

}  // namespace assistd::state
