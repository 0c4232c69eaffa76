// libFuzzer: DurableSessionStore's recovery, which decodes every snapshot and
// log record it finds on start-up. The first byte says where the rest goes
// (see Place); it is written with RocksDB beside a real session's snapshot and
// log, and the store is opened. Opening either fails with kCorrupt naming what
// is wrong, or gives a store that takes new writes and reopens to the same sessions.
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "state/session_document.h"
#include "store_fuzz_support.h"

using namespace assistd;
using fuzz::check;
using fuzz::describe;

namespace {

constexpr char kPath[] = "/fuzz/store";

enum class Place : uint8_t {
    kNextLogRecord,  // the value of s1's next log record
    kSnapshot,       // the value of s1's snapshot, replacing it
    kNewSessionLog,  // the value of the first log record of s2, a session with no snapshot
    kLogKey,         // a log key "l/<bytes>" whose value is a valid delta
};

std::string log_key(std::string_view id, uint64_t seq) {
    std::string k = "l/" + std::string(id) + "/";
    for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>((seq >> (8 * i)) & 0xFF));
    return k;
}

// The records of a store holding one session: a snapshot and a log record after it.
const std::vector<std::pair<std::string, std::string>>& baseline() {
    static const auto records = [] {
        auto env = fuzz::memory_env();
        ManualClock clock;
        {
            auto store = fuzz::open_store(*env, kPath, clock, 7);
            check(store != nullptr);
            check(store->create("s1", "acme", "hello").ok());
            check(store->append_message("s1", {"user", "hi"}).ok());
            check(store->append_message("s1", {"assistant", "hello there"}).ok());
            check(store->set_summary("s1", "a greeting").ok());
        }
        rocksdb::Options options;
        options.env = env.get();
        rocksdb::DB* raw = nullptr;
        check(rocksdb::DB::Open(options, kPath, &raw).ok());
        std::unique_ptr<rocksdb::DB> db(raw);
        std::vector<std::pair<std::string, std::string>> out;
        std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
        for (it->SeekToFirst(); it->Valid(); it->Next())
            out.emplace_back(it->key().ToString(), it->value().ToString());
        check(it->status().ok() && out.size() == 2);  // "d/s1" and "l/s1/<4>"
        return out;
    }();
    return records;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const auto place = static_cast<Place>(data[0] % 4);
    const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
    auto env = fuzz::memory_env();
    {
        rocksdb::Options options;
        options.create_if_missing = true;
        options.env = env.get();
        rocksdb::DB* raw = nullptr;
        check(rocksdb::DB::Open(options, kPath, &raw).ok());
        std::unique_ptr<rocksdb::DB> db(raw);
        rocksdb::WriteBatch batch;
        for (const auto& [key, value] : baseline()) batch.Put(key, value);
        switch (place) {
            case Place::kNextLogRecord:
                batch.Put(log_key("s1", 5), bytes);
                break;
            case Place::kSnapshot:
                batch.Put("d/s1", bytes);
                break;
            case Place::kNewSessionLog:
                batch.Put(log_key("s2", 1), bytes);
                break;
            case Place::kLogKey:
                batch.Put("l/" + bytes, state::SessionDocument::skeleton_delta());
                break;
        }
        rocksdb::WriteOptions sync;
        sync.sync = true;
        check(db->Write(sync, &batch).ok());
    }
    ManualClock clock;
    state::DurableSessionStoreOptions o;
    o.path = kPath;
    o.replica_id = 7;
    o.durability = state::DurableSessionStoreOptions::Durability::kSyncEachWrite;
    o.snapshot_every = 3;
    o.env = env.get();
    auto opened = state::DurableSessionStore::open(o, clock);
    if (!opened.ok()) {
        check(opened.error().code == ErrorCode::kCorrupt);
        check(opened.error().message.starts_with("session store: "));
        return 0;
    }
    auto store = std::move(opened).value();
    describe(*store);  // reads every session it recovered

    // A recovered store goes on: new writes land, and it reopens to what it held.
    check(store->create("fresh", "acme", "new").ok() || store->get("fresh").ok());
    for (const state::SessionVersion& v : store->list_versions()) {
        if (v.deleted || v.version.empty()) continue;
        (void)store->append_message(v.id,
                                    {"user", "still here?"});  // a hostile document may refuse it
    }
    const std::string before = describe(*store);
    store.reset();
    store = fuzz::open_store(*env, kPath, clock, 7);
    check(store != nullptr);
    check(describe(*store) == before);
    return 0;
}
