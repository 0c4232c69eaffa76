// libFuzzer: DurableSessionStore::apply, what a peer's replication delta
// reaches: the envelope (1 = document delta, 2 = tombstone) and the delta
// inside, against a session the store holds and one it does not. A rejected
// delta changes nothing; a tombstone deletes for good; what was accepted
// replicates (changes_since into a second store gives the same sessions) and
// survives a reopen of the store byte for byte.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store_fuzz_support.h"

using namespace assistd;
using fuzz::check;
using fuzz::describe;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view delta(reinterpret_cast<const char*>(data), size);
    auto env = fuzz::memory_env();
    ManualClock clock;
    auto store = fuzz::open_store(*env, "/fuzz/a", clock, 7);
    check(store != nullptr);
    // A session with a snapshot (every third change) and a log after it.
    check(store->create("s1", "acme", "hello").ok());
    check(store->append_message("s1", {"user", "hi"}).ok());
    check(store->append_message("s1", {"assistant", "hello there"}).ok());
    check(store->update_metadata("s1", "topic", "greetings").ok());

    for (const char* id : {"s1", "s2"}) {
        const std::string before = describe(*store);
        const Status st = store->apply(id, delta);
        if (!st.ok()) {
            check(!st.error().message.empty());
            check(describe(*store) == before);  // all or nothing
            continue;
        }
        if (!delta.empty() && delta[0] == 2) {
            check(store->deleted(id) && !store->get(id).ok());
            auto tombstone = store->changes_since(id, {});
            check(tombstone.ok() && *tombstone == std::string(1, '\2'));
        }
    }
    const std::string after = describe(*store);

    // A replica fed the store's changes holds the same sessions.
    auto replica = fuzz::open_store(*env, "/fuzz/b", clock, 9);
    check(replica != nullptr);
    for (const state::SessionVersion& v : store->list_versions()) {
        if (!v.deleted && v.version.empty()) continue;
        auto changes = store->changes_since(v.id, {});
        check(changes.ok());
        check(replica->apply(v.id, *changes).ok());
    }
    check(describe(*replica) == after);

    // What was acknowledged is durable: a reopened store recovers all of it.
    store.reset();
    store = fuzz::open_store(*env, "/fuzz/a", clock, 7);
    check(store != nullptr);
    check(describe(*store) == after);
    return 0;
}
