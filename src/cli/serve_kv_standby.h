#pragma once
// `assistd serve`'s standby KV, composed (docs/cluster.md, "Standby KV"): the
// store that peers' runs (and, with a directory, this node's own) go to, the
// shipper the scheduler hands finished turns to, and their wiring to the
// fleet's peer link.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "serve/kv_standby.h"
#include "serve/kv_standby_store.h"

namespace assistd::cluster {
class FleetNode;
}

namespace assistd::cli {

struct ServeKvStandby {
    std::unique_ptr<serve::KvStandbyStore> store;      // null: no standby KV
    std::unique_ptr<serve::KvStandbyShipper> shipper;
    bool on_disk = false;
};

struct ServeKvStandbyOptions {
    serve::KvStandbyStoreConfig store;  // with `dir`: this node's own sessions are written through too
    size_t bytes_per_token = 0;         // KV bytes of one position (runs are sized by it)
};

// `fleet` (null: one node) gets the peers' side: runs to the sessions'
// replicas, theirs into the store, gap notices both ways. With neither a
// fleet nor a directory there is nothing to do: an empty ServeKvStandby.
// Errors: the directory cannot be opened.
Result<ServeKvStandby> make_serve_kv_standby(const ServeKvStandbyOptions& options, uint64_t fingerprint,
                                             cluster::FleetNode* fleet);

}  // namespace assistd::cli
