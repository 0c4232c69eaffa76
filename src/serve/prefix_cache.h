#pragma once
// The prefix cache: finished requests leave their sequence (prompt and
// answer, with its KV) here, and a new request whose prompt shares a token
// prefix with one of them forks it (blocks shared, copy on write) and
// prefills only the rest. A session's next turn re-renders the whole
// conversation, so matching the longest common token prefix finds the earlier
// turns' KV even where the template re-tokenizes the answer differently.
//
// Entries are evicted least recently used: under the block budget, and
// whenever running requests need a sequence slot or KV blocks (running
// requests always win). Scheduler-thread only; no locking.
//
// The KV cache stores keys and values in one format (the model's kv_type)
// whatever precision computed them, so an entry written at one precision is
// reused at another, like a sequence that changes precision between steps.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "engine/engine.h"

namespace assistd::serve {

class KvDiskTier;
class KvStandbyStore;

struct PrefixCacheConfig {
    size_t max_blocks = 0;         // KV blocks the cached sequences may hold; 0: off
    size_t min_match_tokens = 16;  // shorter common prefixes are prefilled again
    // Entries evicted (and those left at clear()) go here, and a prompt that
    // finds a longer prefix there than in RAM reads it back (kv_disk_tier.h).
    KvDiskTier* disk = nullptr;
    // Peers' standby copies of sessions' KV (kv_standby_store.h): a prompt of a
    // session held there imports its prefix when that beats RAM and disk.
    KvStandbyStore* standby = nullptr;
};

struct PrefixCacheStats {
    uint64_t hits = 0;           // requests that reused a cached prefix
    uint64_t misses = 0;         // requests that found none (with the cache on)
    uint64_t reused_tokens = 0;  // prompt tokens taken from the cache
    uint64_t evictions = 0;
    uint64_t disk_hits = 0;      // requests whose prefix came back from the disk tier
    uint64_t disk_tokens = 0;    // ... prompt tokens it gave them
    uint64_t disk_refused = 0;   // blobs from the disk tier that did not load (the prompt was prefilled)
    uint64_t standby_hits = 0;   // requests whose prefix came from a peer's standby copy
    uint64_t standby_tokens = 0; // ... prompt tokens it gave them
    uint64_t standby_refused = 0;
    size_t sequences = 0;        // cached now
    size_t blocks = 0;           // KV blocks the cached sequences span now (shared ones once per entry)
};

class PrefixCache {
public:
    PrefixCache(engine::Model& model, const PrefixCacheConfig& config);
    ~PrefixCache();
    PrefixCache(const PrefixCache&) = delete;
    PrefixCache& operator=(const PrefixCache&) = delete;

    bool enabled() const { return config_.max_blocks > 0; }

    // Where a reused prefix came from: a recovery when not from RAM.
    enum class Source { kNone, kRam, kDisk, kStandby };
    struct Acquired {
        engine::SequenceId seq = -1;
        size_t reused = 0;  // leading prompt tokens the sequence already holds
        Source source = Source::kNone;
    };
    // A sequence for `prompt`: forked from the cached sequence sharing the
    // longest prefix (at most prompt.size() - 1 tokens, so the last token is
    // computed and gives logits), else a fresh one. Evicts entries when no
    // sequence slot is free; kResourceExhausted when none is, even then.
    // `session_key` (may be empty) finds the session's standby copy.
    Result<Acquired> acquire(std::span<const engine::TokenId> prompt, std::string_view session_key = {});

    // Takes `seq` whose KV holds exactly `tokens`. Entries that are a prefix
    // of `tokens` go (this one answers every request they would); `seq` is
    // freed instead when an entry already holds `tokens` as a prefix of its
    // own or when it would not fit the budget alone.
    void retain(engine::SequenceId seq, std::vector<engine::TokenId> tokens);

    // Evicts least recently used entries until the model has `blocks` free
    // KV blocks or the cache is empty; true when the blocks are free.
    bool make_room(size_t blocks);
    // Evicts the least recently used entry; false when the cache is empty.
    bool evict_one();
    void clear();

    const PrefixCacheStats& stats() const { return stats_; }

private:
    struct Entry {
        engine::SequenceId seq = -1;
        std::vector<engine::TokenId> tokens;
        uint64_t last_used = 0;
        size_t blocks = 0;
    };
    size_t blocks_for(size_t tokens) const;
    // Frees entry `index`; its KV goes to the disk tier first when `to_disk`.
    void evict(size_t index, bool to_disk = true);
    // A sequence holding the first `match` tokens of the disk tier's best entry, when it beats `better_than`.
    std::optional<Acquired> acquire_from_disk(std::span<const engine::TokenId> usable, size_t better_than);
    // ... of the session's standby copy.
    std::optional<Acquired> acquire_from_standby(std::string_view key, std::span<const engine::TokenId> usable,
                                                 size_t better_than);
    // A free sequence slot, evicting entries for it; none when every slot runs a request.
    std::optional<engine::SequenceId> free_slot();
    // The entry sharing the longest prefix with `usable` (npos: none) and that length.
    std::pair<size_t, size_t> longest_entry(std::span<const engine::TokenId> usable) const;
    // The LRU entry other than `keep` (npos: any); npos when there is none.
    size_t lru_index(size_t keep) const;

    engine::Model& model_;
    PrefixCacheConfig config_;
    std::vector<Entry> entries_;
    uint64_t use_counter_ = 0;
    PrefixCacheStats stats_;
};

}  // namespace assistd::serve
