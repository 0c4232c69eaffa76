#pragma once
// What the store fuzz targets share: a DurableSessionStore on an in-memory
// RocksDB env (a run opens several in milliseconds, nothing touches the
// disk), and a canonical description of everything a store holds, to compare
// a store with itself after a reopen or with a replica.
#include <rocksdb/env.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "state/durable_session_store.h"

namespace assistd::fuzz {

inline void check(bool ok) {
    if (!ok) std::abort();
}

inline std::unique_ptr<rocksdb::Env> memory_env() {
    return std::unique_ptr<rocksdb::Env>(rocksdb::NewMemEnv(rocksdb::Env::Default()));
}

inline std::unique_ptr<state::DurableSessionStore> open_store(rocksdb::Env& env,
                                                              const std::string& path, Clock& clock,
                                                              state::crdt::ReplicaId replica) {
    state::DurableSessionStoreOptions o;
    o.path = path;
    o.replica_id = replica;
    o.durability =
        state::DurableSessionStoreOptions::Durability::kSyncEachWrite;  // no syncer thread
    o.snapshot_every = 3;  // a few changes reach both the snapshot and the log
    o.env = &env;
    auto store = state::DurableSessionStore::open(o, clock);
    return store.ok() ? std::move(store).value() : nullptr;
}

inline void field(std::string& out, std::string_view s) {
    out += std::to_string(s.size());
    out += ':';
    out += s;
    out += ' ';
}

// Every session, in id order: deleted, or its version and everything get() reads.
// A session with an empty version must hold nothing, and is left out: apply() of a
// delta that applies nothing to an unknown id leaves such an entry behind (listed by
// list_versions until a restart drops it), which is not data to compare.
inline std::string describe(state::SessionStore& store) {
    std::string out;
    for (const state::SessionVersion& v : store.list_versions()) {
        auto s = store.get(v.id);
        if (v.deleted) {
            check(store.deleted(v.id) && !s.ok() && s.error().code == ErrorCode::kNotFound);
            field(out, v.id);
            out += "deleted\n";
            continue;
        }
        check(s.ok());
        if (v.version.empty()) {
            check(s->tenant.empty() && s->title.empty() && s->messages.empty() &&
                  s->metadata.empty());
            continue;
        }
        check(store.version(v.id).ok() && *store.version(v.id) == v.version);
        field(out, v.id);
        field(out, v.version.to_string());
        field(out, s->tenant);
        field(out, s->title);
        field(out, std::to_string(s->created_at_ms));
        for (const state::Message& m : s->messages) {
            field(out, m.id);
            field(out, m.role);
            field(out, m.content);
            field(out, std::to_string(m.created_at_ms) + "/" + std::to_string(m.author));
        }
        for (const auto& [k, value] : s->metadata) {
            field(out, k);
            field(out, value);
        }
        field(out, std::to_string(s->prompt_tokens) + "/" + std::to_string(s->completion_tokens));
        field(out, s->summary);
        out += '\n';
    }
    return out;
}

}  // namespace assistd::fuzz
