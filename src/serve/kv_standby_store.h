#pragma once
// The receiving side of standby KV (kv_standby.h): runs of sessions' KV,
// kept per session as a chain from position 0, within a byte budget (the
// sessions updated longest ago go first). In RAM, or, with a directory, in
// files there (RAM keeps only each chain's token ids): a node restarted over
// the directory finds every chain again, and 10,000 idle sessions need no RAM
// for their KV. Files are written by a thread of the store's own (temporary
// file, then rename); a damaged one is refused at use and the prompt
// prefilled. Thread-safe.
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "engine/tokenizer.h"

namespace assistd::serve {

struct KvStandbyStoreConfig {
    uint64_t max_bytes = 1ull << 30;  // in RAM, or on disk with `dir`
    size_t min_match_tokens = 16;
    std::string dir{};                // set: runs live in files here; created if missing
};
struct KvStandbyStoreStats {
    uint64_t runs = 0;        // runs taken in from peers
    uint64_t bytes_in = 0;    // ... their bytes
    uint64_t own_runs = 0;    // runs of this node's own sessions kept (disk mode)
    uint64_t refused = 0;     // damaged, another model's, or not loadable at use
    uint64_t gaps = 0;        // runs that did not continue the chain they name (a run was lost): dropped
    uint64_t evictions = 0;   // sessions dropped for the budget
    uint64_t writes = 0;      // runs written to files
    size_t sessions = 0;
    uint64_t bytes = 0;       // held now (RAM, or disk and queued for it)
};

class KvStandbyStore {
public:
    // In RAM (config.dir empty; with a directory use open()).
    KvStandbyStore(KvStandbyStoreConfig config, uint64_t fingerprint);
    // With config.dir: creates it and indexes its runs of the model with
    // `fingerprint` (runs of other models are left alone, unused).
    static Result<std::unique_ptr<KvStandbyStore>> open(const KvStandbyStoreConfig& config, uint64_t fingerprint);
    ~KvStandbyStore();  // writes what is queued, then stops
    KvStandbyStore(const KvStandbyStore&) = delete;
    KvStandbyStore& operator=(const KvStandbyStore&) = delete;

    // One encoded run from a peer (kv_standby.h), checked whole. Errors say
    // why it was not taken (counted).
    Status receive(std::string_view payload);
    // One run of this node's own (its blob just exported: only its header is
    // read), kept so that a restart finds it. Disk mode.
    Status keep_own(std::string_view key, uint64_t prefix_hash, std::string blob);

    struct Part {
        std::string_view blob;             // valid while `bytes` lives
        size_t end = 0;                    // positions past this one are not the session's now: truncate after importing
        std::shared_ptr<const void> bytes;  // what holds the blob: a string, or the run file mapped
    };
    struct Found {
        std::vector<Part> parts;  // in order, from position 0
        size_t match = 0;         // leading tokens of the prompt they hold
    };
    // `key`'s chain when it shares at least min_match_tokens (and more than
    // `better_than`) leading tokens with `usable`; removed from the store:
    // the caller holds it now.
    std::optional<Found> take(std::string_view key, std::span<const engine::TokenId> usable, size_t better_than);
    // A chain take() returned did not load.
    void count_refused();

    KvStandbyStoreStats stats() const;
    void flush();  // waits until every queued run is in its file (tests, shutdown)

private:
    // Disk mode: an encoded run on its way to its file (`head` + `blob`),
    // emptied (under mu_) once the file holds it.
    struct Pending {
        std::string head, blob;
        bool written = false;
        bool writing = false;  // the writer reads head and blob outside the lock
    };
    struct Run {
        size_t first = 0;
        uint64_t bytes = 0;
        std::string blob;                  // RAM mode
        std::string path;                  // disk mode: the file holding the encoded run
        std::shared_ptr<Pending> pending;  // disk mode
    };
    struct Chain {
        std::vector<Run> runs;
        std::vector<engine::TokenId> tokens;  // the session's, as far as the runs reach
        uint64_t bytes = 0;
        uint64_t last_used = 0;
    };
    // Takes a checked run: links it, queues its file. Errors: a gap.
    Status take_in(std::string_view key, uint64_t prefix_hash, std::string head, std::string blob, size_t first,
                   std::span<const engine::TokenId> tokens, size_t payload_bytes, bool own);
    // Appends a run to `key`'s chain (cutting what it replaces); false: a gap.
    // Under mu_.
    bool link(const std::string& key, uint64_t prefix_hash, size_t first, std::span<const engine::TokenId> tokens,
              Run run);
    void drop_run(Run& run);  // under mu_: its file goes
    void enforce_budget();    // under mu_
    void writer_loop();
    bool on_disk() const { return !config_.dir.empty(); }

    KvStandbyStoreConfig config_;
    uint64_t fingerprint_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::unordered_map<std::string, Chain> chains_;
    uint64_t use_counter_ = 0;
    KvStandbyStoreStats stats_;
    // Disk mode.
    std::deque<std::pair<std::string, std::shared_ptr<Pending>>> queue_;  // path, encoded run
    std::unordered_set<std::string> live_paths_;  // files a chain names (written or queued)
    size_t writing_ = 0;
    bool stopping_ = false;
    uint64_t name_base_ = 0, serial_ = 0;
    std::thread writer_;
};

}  // namespace assistd::serve
