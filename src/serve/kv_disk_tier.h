#pragma once
// The disk tier under the prefix cache: the KV of conversations that leave
// RAM goes to files in a directory (one blob each, engine/kv_blob.h), within
// a byte budget, least recently used out first; a returning conversation, or
// a restarted node (the directory is indexed at open), reads it back instead
// of prefilling. Files are written by a thread of the tier's own (atomically:
// temporary file, then rename); a damaged, truncated or foreign file is
// refused, counted and removed, and the request prefills as without it.
// The index (token ids per file) is all that stays in RAM.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "engine/engine.h"

namespace assistd::serve {

struct KvDiskTierConfig {
    std::string dir;            // created if missing
    uint64_t max_bytes = 0;     // files beyond it go, oldest use first
    size_t min_match_tokens = 16;
};

struct KvDiskTierStats {
    uint64_t hits = 0;       // prompts that took their prefix from disk
    uint64_t writes = 0;     // entries written
    uint64_t refused = 0;    // files refused (damaged, truncated, another model's)
    uint64_t evictions = 0;  // files removed for the budget
    size_t entries = 0;
    uint64_t bytes = 0;      // on disk (and queued for it)
};

class KvDiskTier {
public:
    // Indexes the directory's blobs of the model with `fingerprint`; files of
    // other models are left alone but not used.
    static Result<std::unique_ptr<KvDiskTier>> open(const KvDiskTierConfig& config, uint64_t fingerprint);
    ~KvDiskTier();  // writes what is queued, then stops
    KvDiskTier(const KvDiskTier&) = delete;
    KvDiskTier& operator=(const KvDiskTier&) = delete;

    // An entry leaving RAM: `blob` covers positions [0, tokens.size()). Entries
    // that are a prefix of `tokens` are superseded and go.
    void put(std::vector<engine::TokenId> tokens, std::string blob);

    struct Found {
        std::string blob;                   // the whole entry
        size_t match = 0;                   // leading tokens of the prompt it holds
    };
    // The entry sharing the longest prefix with `usable` when that prefix is
    // at least min_match_tokens and longer than `better_than`; read from disk
    // (or the write queue) and removed from the tier: the caller holds it now.
    std::optional<Found> take_longest(std::span<const engine::TokenId> usable, size_t better_than);
    // A blob take_longest returned did not load: counted, its file is gone already.
    void count_refused() { refused_.fetch_add(1); }

    KvDiskTierStats stats() const;
    void flush();  // waits until every queued entry is on disk (tests, shutdown)

private:
    struct Entry {
        std::vector<engine::TokenId> tokens;
        std::string path;
        uint64_t bytes = 0;
        uint64_t last_used = 0;
        std::shared_ptr<std::string> pending;  // not written yet
    };
    KvDiskTier(KvDiskTierConfig config, uint64_t fingerprint);
    void writer_loop();
    void enforce_budget();  // under mu_
    void remove_entry(size_t index);  // under mu_

    KvDiskTierConfig config_;
    uint64_t fingerprint_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<Entry> entries_;
    std::deque<std::pair<std::string, std::shared_ptr<std::string>>> queue_;  // path, blob
    size_t writing_ = 0;
    bool stopping_ = false;
    uint64_t use_counter_ = 0, bytes_ = 0, serial_ = 0, nonce_ = 0;
    std::atomic<uint64_t> hits_{0}, writes_{0}, refused_{0}, evictions_{0};
    std::thread writer_;
};

}  // namespace assistd::serve
