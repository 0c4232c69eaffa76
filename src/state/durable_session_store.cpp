#include "state/durable_session_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>

#include "state/crdt/encoding.h"
#include "state/group_commit_log.h"

namespace assistd::state {
namespace {

// Envelope of a replication delta: a document delta, or the session's tombstone.
constexpr uint8_t kEnvelopeDelta = 1;
constexpr uint8_t kEnvelopeTombstone = 2;

Error io_error(const rocksdb::Status& s, const char* what) {
    return make_error(ErrorCode::kIo, std::string("session store: ") + what + ": " + s.ToString());
}

Status validate_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxSessionKeyLength)
        return make_error(ErrorCode::kInvalidArgument,
                          "session id must be 1 to " + std::to_string(kMaxSessionKeyLength) + " characters");
    for (char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.' || c == ':';
        if (!ok) {
            return make_error(ErrorCode::kInvalidArgument,
                              "session id '" + std::string(id) + "' may only hold letters, digits and -_.:");
        }
    }
    return {};
}

std::string snapshot_key(std::string_view id) { return "d/" + std::string(id); }
std::string tombstone_key(std::string_view id) { return "t/" + std::string(id); }
std::string log_prefix(std::string_view id) { return "l/" + std::string(id) + "/"; }
std::string log_key(std::string_view id, uint64_t seq) {
    std::string k = log_prefix(id);
    for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>((seq >> (8 * i)) & 0xFF));  // big-endian: sorts
    return k;
}

Error not_found(std::string_view id) {
    return make_error(ErrorCode::kNotFound, "session '" + std::string(id) + "' does not exist");
}

}  // namespace

DurableSessionStore::DurableSessionStore(DurableSessionStoreOptions options, Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

DurableSessionStore::~DurableSessionStore() {
    log_.reset();
    if (db_) (void)db_->Close();
}

Result<std::unique_ptr<DurableSessionStore>> DurableSessionStore::open(const DurableSessionStoreOptions& options,
                                                                        Clock& clock) {
    if (options.replica_id == 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "session store: replica id must be non-zero");
    std::error_code ec;
    if (!options.env) std::filesystem::create_directories(options.path, ec);
    if (ec) {
        return make_error(ErrorCode::kIo, "session store: cannot create directory '" + options.path + "': " + ec.message());
    }
    std::unique_ptr<DurableSessionStore> store(new DurableSessionStore(options, clock));
    rocksdb::Options opts;
    opts.create_if_missing = true;
    opts.manual_wal_flush = false;
    // The write-ahead log is what makes a write durable; memtables only buffer it
    // until a flush, so they stay small, like the block cache (the OS caches the files).
    opts.write_buffer_size = options.memtable_bytes;
    opts.max_write_buffer_number = 2;
    rocksdb::BlockBasedTableOptions table;
    table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    opts.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
    if (options.env) opts.env = options.env;
    rocksdb::DB* db = nullptr;
    auto s = rocksdb::DB::Open(opts, options.path, &db);
    if (!s.ok()) return io_error(s, ("cannot open '" + options.path + "'").c_str());
    store->db_.reset(db);
    auto st = store->recover();
    if (!st.ok()) return st.error();
    if (options.durability == DurableSessionStoreOptions::Durability::kGroupCommit) {
        store->log_ = std::make_unique<GroupCommitLog>(*store->db_);
    }
    return store;
}

Status DurableSessionStore::recover() {
    std::set<std::string> ids;
    {
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
        for (it->Seek("t/"); it->Valid() && it->key().starts_with("t/"); it->Next()) {
            deleted_.insert(it->key().ToString().substr(2));
        }
        for (it->Seek("d/"); it->Valid() && it->key().starts_with("d/"); it->Next()) {
            ids.insert(it->key().ToString().substr(2));
        }
        for (it->Seek("l/"); it->Valid() && it->key().starts_with("l/"); it->Next()) {
            const rocksdb::Slice key = it->key();
            if (key.size() < 11 || key[key.size() - 9] != '/')
                return make_error(ErrorCode::kCorrupt, "session store: bad log key");
            ids.emplace(key.data() + 2, key.size() - 11);
        }
        if (!it->status().ok()) return io_error(it->status(), "recovery scan");
    }
    for (const std::string& id : ids) {
        auto loaded = load(id);
        if (!loaded.ok()) return loaded.error();
        auto e = std::make_shared<Entry>();
        e->doc = std::move(loaded->doc);
        e->next_seq = loaded->next_seq;
        e->since_snapshot = loaded->log_records;
        e->tenant = e->doc->tenant();
        e->version = e->doc->doc().version();
        by_tenant_[e->tenant].insert(id);
        sessions_[id] = e;
        {
            std::lock_guard<std::mutex> lock(e->mu);
            cache_use(e, true);
        }
        evict_over_budget();
    }
    return {};
}

Result<DurableSessionStore::Loaded> DurableSessionStore::load(std::string_view id) {
    Loaded out;
    std::string snapshot;
    auto s = db_->Get(rocksdb::ReadOptions(), snapshot_key(id), &snapshot);
    if (s.ok()) {
        crdt::Reader r(snapshot);
        uint64_t covered;
        if (!r.varint(covered))
            return make_error(ErrorCode::kCorrupt,
                              "session store: snapshot of '" + std::string(id) + "' is corrupt");
        const std::string_view rest(snapshot.data() + (snapshot.size() - r.remaining()),
                                    r.remaining());
        auto doc = crdt::Document::decode(rest, options_.replica_id);
        if (!doc.ok()) {
            return make_error(
                ErrorCode::kCorrupt,
                "session store: snapshot of '" + std::string(id) + "': " + doc.error().message);
        }
        out.doc = std::make_unique<SessionDocument>(std::move(doc).value());
        out.next_seq = covered + 1;
    } else if (s.IsNotFound()) {
        out.doc = std::make_unique<SessionDocument>(crdt::Document(options_.replica_id));
    } else {
        return io_error(s, "read of a snapshot");
    }
    const std::string prefix = log_prefix(id);
    std::string end = prefix;
    end.back() = '/' + 1;  // just past every key that starts with the prefix
    const rocksdb::Slice end_slice(end);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &end_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
    for (it->Seek(prefix); it->Valid(); it->Next()) {
        const rocksdb::Slice key = it->key();
        if (key.size() != prefix.size() + 8) continue;  // a longer id's log ("l/<id>/x/<seq>")
        uint64_t seq = 0;
        for (size_t i = prefix.size(); i < key.size(); ++i)
            seq = (seq << 8) | static_cast<uint8_t>(key[i]);
        auto st = out.doc->doc().apply(std::string_view(it->value().data(), it->value().size()));
        if (!st.ok()) {
            return make_error(ErrorCode::kCorrupt, "session store: log of '" + std::string(id) +
                                                       "': " + st.error().message);
        }
        out.next_seq = std::max(out.next_seq, seq + 1);
        ++out.log_records;
    }
    if (!it->status().ok()) return io_error(it->status(), "read of a session's log");
    return out;
}

Status DurableSessionStore::ensure_loaded(std::string_view id,
                                          const std::shared_ptr<Entry>& entry) {
    if (entry->doc) return {};
    auto loaded = load(id);
    if (!loaded.ok()) return loaded.error();
    entry->doc = std::move(loaded->doc);
    cache_use(entry, true);
    return {};
}

void DurableSessionStore::cache_use(const std::shared_ptr<Entry>& entry, bool resized) {
    const size_t bytes =
        resized || !entry->in_cache ? entry->doc->doc().memory_bytes() : entry->cached_bytes;
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (entry->in_cache) {
        lru_.splice(lru_.begin(), lru_, entry->lru);
    } else {
        lru_.push_front(entry);
        entry->lru = lru_.begin();
        entry->in_cache = true;
    }
    cached_bytes_ = cached_bytes_ - entry->cached_bytes + bytes;
    entry->cached_bytes = bytes;
}

void DurableSessionStore::cache_forget(Entry& entry) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (!entry.in_cache) return;
    lru_.erase(entry.lru);
    entry.in_cache = false;
    cached_bytes_ -= entry.cached_bytes;
    entry.cached_bytes = 0;
}

void DurableSessionStore::evict_over_budget() {
    // After a failed write the documents in memory may hold changes the disk lacks: keep them.
    if (!check_writable().ok()) return;
    std::vector<std::unique_ptr<SessionDocument>> dropped;  // freed after the cache lock
    {
        std::lock_guard<std::mutex> lock(cache_mu_);
        for (size_t tries = lru_.size(); cached_bytes_ > options_.cache_bytes && tries > 0;
             --tries) {
            const std::shared_ptr<Entry> victim = lru_.back();
            // try_lock: the order is an entry's lock, then the cache's; one in use is skipped.
            std::unique_lock<std::mutex> victim_lock(victim->mu, std::try_to_lock);
            const bool evictable = victim_lock.owns_lock() && victim->doc &&
                                   victim->doc->doc().pending_changes() == 0 &&
                                   (!log_ || log_->durable(victim->last_ticket));
            if (!evictable) {
                lru_.splice(lru_.begin(), lru_, victim->lru);
                continue;
            }
            lru_.pop_back();
            victim->in_cache = false;
            cached_bytes_ -= victim->cached_bytes;
            victim->cached_bytes = 0;
            dropped.push_back(std::move(victim->doc));
        }
    }
}

std::shared_ptr<DurableSessionStore::Entry> DurableSessionStore::find(std::string_view id) const {
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    auto it = sessions_.find(std::string(id));
    return it == sessions_.end() ? nullptr : it->second;
}

bool DurableSessionStore::is_deleted(std::string_view id) const {
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    return deleted_.count(std::string(id)) > 0;
}

Status DurableSessionStore::check_writable() {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (write_failure_.ok()) return {};
    return make_error(
        ErrorCode::kIo,
        "session store: takes no more writes since a write to disk failed (" +
            write_failure_.error().message +
            "); reopen the store (restart the server) to write again; reads still work");
}

Error DurableSessionStore::stop_writes(const Error& cause) {
    std::lock_guard<std::mutex> lock(failure_mu_);
    if (write_failure_.ok()) {
        write_failure_ = cause;
        spdlog::error(
            "{}; the store at '{}' takes no more writes until it is reopened (reads still work)",
            cause.message, options_.path);
    }
    return make_error(cause.code, cause.message +
                                      "; the write is not saved and the store takes no more writes "
                                      "until it is reopened (restart the server)");
}

template <typename Fill>
Result<uint64_t> DurableSessionStore::write(Fill&& fill) {
    if (auto st = check_writable(); !st.ok()) return st.error();
    if (log_) {
        auto ticket = log_->add(fill);
        if (!ticket.ok()) return stop_writes(ticket.error());
        return ticket;
    }
    rocksdb::WriteBatch batch;
    fill(batch);
    rocksdb::WriteOptions synced;
    synced.sync = true;
    auto s = db_->Write(synced, &batch);
    if (!s.ok()) return stop_writes(io_error(s, "synced write"));
    return uint64_t{0};
}

Status DurableSessionStore::wait_synced(uint64_t ticket) {
    if (ticket == 0) return {};
    auto st = log_->wait(ticket);
    if (!st.ok()) return stop_writes(st.error());
    return {};
}

Result<uint64_t> DurableSessionStore::persist_unsynced(std::string_view id,
                                                       const std::shared_ptr<Entry>& entry_ptr,
                                                       const crdt::VersionVector& before,
                                                       std::unique_lock<std::mutex>& lock) {
    Entry& entry = *entry_ptr;
    crdt::Document& doc = entry.doc->doc();
    entry.version = doc.version();
    const uint64_t seq = entry.next_seq++;
    const std::string delta = doc.changes_since(before);
    std::string snapshot;
    if (++entry.since_snapshot >= static_cast<uint64_t>(options_.snapshot_every)) {
        crdt::Writer w;
        w.varint(seq);
        w.raw(doc.encode());
        snapshot = w.str();
        entry.since_snapshot = 0;
    }
    // Handed to the log under the session lock so the log order is the apply
    // order; the wait for the fsync happens without it.
    auto ticket = write([&](rocksdb::WriteBatch& batch) {
        batch.Put(log_key(id, seq), delta);
        if (!snapshot.empty()) {
            batch.Put(snapshot_key(id), snapshot);
            batch.DeleteRange(log_key(id, 0), log_key(id, seq + 1));
        }
    });
    if (ticket.ok()) entry.last_ticket = *ticket;
    cache_use(entry_ptr, true);
    lock.unlock();
    return ticket;
}

Status DurableSessionStore::persist(std::string_view id, const std::shared_ptr<Entry>& entry,
                                    const crdt::VersionVector& before,
                                    std::unique_lock<std::mutex>& lock) {
    auto ticket = persist_unsynced(id, entry, before, lock);
    evict_over_budget();
    if (!ticket.ok()) return ticket.error();
    return wait_synced(*ticket);
}

template <typename Fn>
Status DurableSessionStore::mutate(std::string_view id, Fn&& fn) {
    if (auto st = check_writable(); !st.ok()) return st;
    auto entry = find(id);
    if (!entry) return not_found(id);
    std::unique_lock<std::mutex> lock(entry->mu);
    if (entry->removed || entry->orphaned) return not_found(id);  // removed meanwhile
    if (auto st = ensure_loaded(id, entry); !st.ok()) return st;
    const crdt::VersionVector before = entry->doc->doc().version();
    auto st = fn(*entry->doc);
    if (!st.ok()) return st;
    auto ps = persist(id, entry, before, lock);
    if (!ps.ok()) return ps;
    notify(SessionEvent::Kind::kChanged, id, false);
    return {};
}

Status DurableSessionStore::create(std::string_view id, std::string_view tenant, std::string_view title) {
    if (auto st = validate_id(id); !st.ok()) return st;
    if (auto st = check_writable(); !st.ok()) return st;
    auto doc = SessionDocument::create(options_.replica_id, tenant, title, clock_.now_unix_ms());
    if (!doc.ok()) return doc.error();
    auto entry = std::make_shared<Entry>();
    entry->doc = std::make_unique<SessionDocument>(std::move(doc).value());
    entry->tenant.assign(tenant);
    std::unique_lock<std::mutex> lock(entry->mu);
    {
        std::unique_lock<std::shared_mutex> map_lock(map_mu_);
        if (deleted_.count(std::string(id))) {
            return make_error(ErrorCode::kInvalidArgument, "session '" + std::string(id) + "' was deleted; ids are not reused");
        }
        if (!sessions_.emplace(std::string(id), entry).second) {
            return make_error(ErrorCode::kInvalidArgument, "session '" + std::string(id) + "' already exists");
        }
        by_tenant_[entry->tenant].insert(std::string(id));
    }
    auto st = persist(id, entry, crdt::VersionVector{}, lock);
    if (!st.ok()) return st;
    notify(SessionEvent::Kind::kCreated, id, false);
    return {};
}

Result<Session> DurableSessionStore::get(std::string_view id) {
    auto entry = find(id);
    if (!entry) return not_found(id);
    Result<Session> out = not_found(id);
    {
        std::lock_guard<std::mutex> lock(entry->mu);
        if (entry->removed || entry->orphaned) return not_found(id);
        if (auto st = ensure_loaded(id, entry); !st.ok()) return st.error();
        out = entry->doc->read(id);
        cache_use(entry, false);
    }
    evict_over_budget();
    return out;
}

Result<Message> DurableSessionStore::append_message(std::string_view id, const MessageInput& message) {
    Message out;
    auto st = mutate(id, [&](SessionDocument& doc) -> Status {
        auto m = doc.append_message(message, clock_.now_unix_ms());
        if (!m.ok()) return m.error();
        out = std::move(m).value();
        return {};
    });
    if (!st.ok()) return st.error();
    return out;
}

Status DurableSessionStore::update_metadata(std::string_view id, std::string_view key, std::string_view value) {
    return mutate(id, [&](SessionDocument& doc) { return doc.update_metadata(key, value); });
}

Status DurableSessionStore::add_usage(std::string_view id, int64_t prompt_tokens, int64_t completion_tokens) {
    return mutate(id, [&](SessionDocument& doc) { return doc.add_usage(prompt_tokens, completion_tokens); });
}

Status DurableSessionStore::set_summary(std::string_view id, std::string_view summary) {
    return mutate(id, [&](SessionDocument& doc) { return doc.set_summary(summary); });
}

Status DurableSessionStore::remove(std::string_view id) {
    if (auto st = validate_id(id); !st.ok()) return st;
    if (auto st = check_writable(); !st.ok()) return st;
    std::shared_ptr<Entry> entry;
    {
        std::unique_lock<std::shared_mutex> map_lock(map_mu_);
        if (deleted_.count(std::string(id))) return {};
        auto it = sessions_.find(std::string(id));
        if (it != sessions_.end()) {
            entry = it->second;
            auto t = by_tenant_.find(entry->tenant);
            if (t != by_tenant_.end()) t->second.erase(std::string(id));
            sessions_.erase(it);
        }
        deleted_.insert(std::string(id));
    }
    if (entry) {
        std::lock_guard<std::mutex> lock(entry->mu);
        entry->removed = true;
        entry->doc.reset();  // the data is gone from memory now
        cache_forget(*entry);
    }
    auto ticket = write([&](rocksdb::WriteBatch& batch) {
        batch.Put(tombstone_key(id), "");
        batch.Delete(snapshot_key(id));
        batch.DeleteRange(log_key(id, 0), log_key(id, UINT64_MAX));
    });
    if (!ticket.ok()) return ticket.error();
    if (auto st = wait_synced(*ticket); !st.ok()) return st;
    // Reclaim the space of the dropped range now rather than at some later compaction. The
    // deletion is durable already; a failed compaction only stops later writes, like a failed
    // write. One at a time and none after a failure: RocksDB 7.8 asserts when a memtable switch
    // that failed is tried again (fixed upstream by facebook/rocksdb#12796).
    {
        std::lock_guard<std::mutex> compact_lock(compact_mu_);
        if (check_writable().ok()) {
            const std::string from = log_prefix(id), to = log_key(id, UINT64_MAX);
            rocksdb::Slice b(from), e(to);
            auto cs = db_->CompactRange(rocksdb::CompactRangeOptions(), &b, &e);
            if (cs.IsIOError()) (void)stop_writes(io_error(cs, "compaction of a deleted session"));
        }
    }
    notify(SessionEvent::Kind::kDeleted, id, false);
    return {};
}

std::vector<std::string> DurableSessionStore::list_by_tenant(std::string_view tenant) {
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    auto it = by_tenant_.find(tenant);
    if (it == by_tenant_.end()) return {};
    return std::vector<std::string>(it->second.begin(), it->second.end());
}

Result<crdt::VersionVector> DurableSessionStore::version(std::string_view id) {
    auto entry = find(id);
    if (!entry) return not_found(id);
    std::lock_guard<std::mutex> lock(entry->mu);
    if (entry->removed || entry->orphaned) return not_found(id);
    return entry->doc ? entry->doc->doc().version() : entry->version;
}

Result<std::string> DurableSessionStore::changes_since(std::string_view id, const crdt::VersionVector& since) {
    if (is_deleted(id)) return std::string(1, static_cast<char>(kEnvelopeTombstone));
    auto entry = find(id);
    if (!entry) return not_found(id);
    std::string out(1, static_cast<char>(kEnvelopeDelta));
    {
        std::lock_guard<std::mutex> lock(entry->mu);
        if (entry->orphaned) return not_found(id);
        if (entry->removed) return std::string(1, static_cast<char>(kEnvelopeTombstone));
        if (auto st = ensure_loaded(id, entry); !st.ok()) return st.error();
        out += entry->doc->doc().changes_since(since);
        cache_use(entry, false);
    }
    evict_over_budget();
    return out;
}

Status DurableSessionStore::apply_unsynced(std::string_view id, std::string_view delta, uint64_t& ticket,
                                           Applied& applied) {
    ticket = 0;
    applied = Applied::kNothing;
    if (auto st = validate_id(id); !st.ok()) return st;
    if (delta.empty() || (delta[0] != kEnvelopeDelta && delta[0] != kEnvelopeTombstone)) {
        return make_error(ErrorCode::kCorrupt, "session store: not a session delta");
    }
    if (auto st = check_writable(); !st.ok()) return st;
    if (delta[0] == kEnvelopeTombstone) return remove(id);  // synced (and notified) itself
    if (is_deleted(id)) return {};  // deleted for good: late changes are dropped
    delta.remove_prefix(1);
    std::shared_ptr<Entry> entry;
    std::unique_lock<std::mutex> lock;
    bool created = false;
    // A concurrent apply() may orphan the entry found here (below): then look again.
    for (int attempt = 0; attempt < 8; ++attempt) {
        entry = find(id);
        created = false;
        if (!entry) {
            auto fresh = std::make_shared<Entry>();
            fresh->doc = std::make_unique<SessionDocument>(crdt::Document(options_.replica_id));
            std::unique_lock<std::shared_mutex> map_lock(map_mu_);
            if (deleted_.count(std::string(id))) return {};
            auto [it, inserted] = sessions_.emplace(std::string(id), fresh);
            entry = it->second;
            created = inserted;
        }
        lock = std::unique_lock<std::mutex>(entry->mu);
        if (!entry->orphaned) break;
        lock.unlock();
    }
    if (entry->orphaned) return make_error(ErrorCode::kResourceExhausted, "session store: the session is busy; retry");
    if (entry->removed) return {};
    if (auto st = ensure_loaded(id, entry); !st.ok()) return st;
    crdt::Document& doc = entry->doc->doc();
    const crdt::VersionVector before = doc.version();
    auto st = doc.apply(delta);
    if (!st.ok() || doc.version() == before) {
        // An entry made for this delta that holds nothing goes again, so the id
        // reads, lists and can be created as one nobody holds (its buffered part
        // comes again with the sender's next push).
        if (created && before.empty()) {
            std::unique_lock<std::shared_mutex> map_lock(map_mu_);
            auto it = sessions_.find(std::string(id));
            if (it != sessions_.end() && it->second == entry) sessions_.erase(it);
            entry->orphaned = true;
            cache_forget(*entry);
        }
        return st;  // rejected, or nothing new (duplicate or still buffered)
    }
    if (entry->tenant.empty()) {
        entry->tenant = entry->doc->tenant();
        if (!entry->tenant.empty()) {
            std::unique_lock<std::shared_mutex> map_lock(map_mu_);
            by_tenant_[entry->tenant].insert(std::string(id));
        }
    }
    auto written = persist_unsynced(id, entry, before, lock);
    if (!written.ok()) return written.error();
    ticket = *written;
    applied = created ? Applied::kCreated : Applied::kChanged;
    return {};
}

Status DurableSessionStore::apply(std::string_view id, std::string_view delta) {
    uint64_t ticket = 0;
    Applied applied = Applied::kNothing;
    auto st = apply_unsynced(id, delta, ticket, applied);
    evict_over_budget();
    if (!st.ok()) return st;
    if (applied == Applied::kNothing) return {};
    if (auto st = wait_synced(ticket); !st.ok()) return st;
    notify(applied == Applied::kCreated ? SessionEvent::Kind::kCreated : SessionEvent::Kind::kChanged, id, true);
    return {};
}

std::vector<Status> DurableSessionStore::apply_all(
    const std::vector<std::pair<std::string_view, std::string_view>>& items) {
    std::vector<Status> out(items.size());
    std::vector<Applied> applied(items.size(), Applied::kNothing);
    uint64_t last = 0;
    for (size_t i = 0; i < items.size(); ++i) {
        uint64_t ticket = 0;
        out[i] = apply_unsynced(items[i].first, items[i].second, ticket, applied[i]);
        last = std::max(last, ticket);
    }
    evict_over_budget();
    // Tickets are handed out in order: the last one synced covers them all.
    const Status synced = wait_synced(last);
    for (size_t i = 0; i < items.size(); ++i) {
        if (applied[i] == Applied::kNothing) continue;
        if (!synced.ok()) {
            out[i] = synced;
            continue;
        }
        notify(applied[i] == Applied::kCreated ? SessionEvent::Kind::kCreated : SessionEvent::Kind::kChanged,
               items[i].first, true);
    }
    return out;
}

bool DurableSessionStore::deleted(std::string_view id) { return is_deleted(id); }

std::vector<SessionVersion> DurableSessionStore::list_versions() {
    std::vector<std::pair<std::string, std::shared_ptr<Entry>>> live;
    std::vector<SessionVersion> out;
    {
        std::shared_lock<std::shared_mutex> lock(map_mu_);
        live.assign(sessions_.begin(), sessions_.end());
        out.reserve(live.size() + deleted_.size());
        for (const auto& id : deleted_) out.push_back(SessionVersion{id, {}, true});
    }
    for (auto& [id, entry] : live) {
        std::lock_guard<std::mutex> lock(entry->mu);
        if (entry->removed || entry->orphaned) continue;
        out.push_back(
            SessionVersion{id, entry->doc ? entry->doc->doc().version() : entry->version, false});
    }
    std::sort(out.begin(), out.end(), [](const SessionVersion& a, const SessionVersion& b) { return a.id < b.id; });
    return out;
}

uint64_t DurableSessionStore::subscribe(Subscriber subscriber) {
    std::lock_guard<std::mutex> lock(sub_mu_);
    const uint64_t id = next_subscription_++;
    subscribers_[id] = std::move(subscriber);
    return id;
}

void DurableSessionStore::unsubscribe(uint64_t subscription) {
    std::lock_guard<std::mutex> lock(sub_mu_);
    subscribers_.erase(subscription);
}

void DurableSessionStore::notify(SessionEvent::Kind kind, std::string_view id, bool remote) {
    std::vector<Subscriber> subs;
    {
        std::lock_guard<std::mutex> lock(sub_mu_);
        if (subscribers_.empty()) return;
        for (const auto& [k, s] : subscribers_) subs.push_back(s);
    }
    const SessionEvent ev{kind, std::string(id), remote};
    for (const auto& s : subs) s(ev);
}

size_t DurableSessionStore::session_count() const {
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    return sessions_.size();
}

size_t DurableSessionStore::cached_documents() const {
    std::lock_guard<std::mutex> lock(cache_mu_);
    return lru_.size();
}

size_t DurableSessionStore::cached_bytes() const {
    std::lock_guard<std::mutex> lock(cache_mu_);
    return cached_bytes_;
}

}  // namespace assistd::state
