#pragma once
// Standby KV: after each turn of a session, the KV of the tokens its standby
// copies lack is sent as runs (engine/kv_blob.h) to other nodes, which keep
// them per session; when the session's next turn lands on such a node (its
// server died, restarted or was drained), the prompt's prefix is imported
// from there instead of prefilled.
//
// A run is used only where it is exactly right: it carries the hash of the
// token ids before its first position, and the receiver appends it only to a
// chain whose tokens hash the same there; at use, the chain's tokens must be
// the prompt's own prefix, and the blob's model fingerprint (weights, shapes,
// RoPE, KV type) this model's. The KV of a position depends on nothing but
// the model and the tokens up to it, so a changed history or a restarted
// sender can make a chain shorter, never wrong.
//
// The transport is not here: the shipper hands encoded runs to a send
// function (cli wires the cluster's peer streams, and the node's own store
// when it keeps KV on disk), and the store (kv_standby_store.h) takes what
// arrives.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/result.h"
#include "engine/tokenizer.h"

namespace assistd::serve {

// A hash of token ids that extends: token_hash(a + b) == token_hash(b, token_hash(a)).
uint64_t token_hash(std::span<const engine::TokenId> tokens, uint64_t seed = 0xcbf29ce484222325ull);

// One run of a session's KV on the wire: "KVR1" | u64 prefix hash | u32 key
// length | key | blob. `prefix_hash` is token_hash of the tokens before the
// blob's first position.
std::string encode_kv_run(std::string_view key, uint64_t prefix_hash, std::string_view blob);
// The part before the blob: encode_kv_run(k, h, b) == encode_kv_run_header(k, h) + b.
std::string encode_kv_run_header(std::string_view key, uint64_t prefix_hash);
struct KvRunView {
    std::string_view key;
    uint64_t prefix_hash = 0;
    std::string_view blob;
};
Result<KvRunView> decode_kv_run(std::string_view payload);

// The sending side, on the scheduler thread.
struct KvStandbyShipperConfig {
    size_t run_tokens = 256;       // positions per run (a frame) at most...
    size_t max_run_bytes = size_t{16} << 20;  // ... and bytes (a frame stays far under the peers' 64 MiB limit)
    size_t bytes_per_token = 0;    // KV bytes of one position (all layers, K and V); 0: runs by run_tokens alone
    size_t max_sessions = 65536;   // sessions whose shipped prefix is remembered, per destination (oldest forgotten)
};
struct KvStandbyShipperStats {
    uint64_t runs = 0;           // runs exported
    uint64_t bytes = 0;          // ... their bytes
    uint64_t tokens = 0;         // ... positions they carried
    uint64_t dropped = 0;        // runs a destination refused (over budget): that destination gets all again next turn
    uint64_t export_errors = 0;
    double export_seconds = 0;   // scheduler time spent exporting
};

// What a destination did with a run.
enum class KvSendResult {
    kSent,      // queued for every standby copy
    kNoTarget,  // nowhere to send it now (no live replica): not a loss
    kDropped,   // refused (over budget, a gap): the destination starts the session over
};

class KvStandbyShipper {
public:
    // Sends one run of `key` (its blob, and the hash of the tokens before it)
    // to one destination's standby copies. Must not block.
    using Send = std::function<KvSendResult(std::string_view key, uint64_t prefix_hash, std::string_view blob)>;
    // The KV blob of positions [begin, end) of the finished sequence.
    using Export = std::function<Result<std::string>(size_t begin, size_t end)>;

    // Destinations (e.g. the peers, this node's own disk) are independent:
    // each remembers what it was sent, and one failing never stops another.
    KvStandbyShipper(KvStandbyShipperConfig config, std::vector<Send> destinations);

    // A turn of `key` finished and its sequence holds `tokens`: ships what
    // each destination lacks (from where their tokens and these part).
    void turn_finished(std::string_view key, std::span<const engine::TokenId> tokens, const Export& export_run);
    // Destination `d`'s copy of `key` has a gap (its receiver said so): the
    // next turn sends it everything. Any thread.
    void forget(size_t d, std::string_view key);
    // The leading tokens of `tokens` that destination `d` was sent for `key`.
    size_t shipped(size_t d, std::string_view key, std::span<const engine::TokenId> tokens) const;
    size_t run_tokens() const { return run_tokens_; }

    const KvStandbyShipperStats& stats() const { return stats_; }

private:
    static constexpr size_t kCheckpoint = 32;  // the shipped prefix is known at every this many tokens
    struct Record {
        std::vector<uint64_t> checkpoints;  // token_hash of the first (i + 1) * kCheckpoint tokens
        size_t length = 0;                  // tokens shipped
        uint64_t hash = 0;                  // token_hash of all of them
        uint64_t last_used = 0;
    };
    struct Destination {
        Send send;
        std::unordered_map<std::string, Record> records;
    };
    static Record record_of(std::span<const engine::TokenId> tokens);
    void remember(Destination& d, const std::string& key, const Record& record);
    void forget_oldest(Destination& d);

    void apply_forgets();  // what forget() queued, on the scheduler thread

    KvStandbyShipperConfig config_;
    size_t run_tokens_ = 1;
    std::mutex forget_mu_;
    std::vector<std::pair<size_t, std::string>> forgets_;  // under forget_mu_
    std::vector<Destination> destinations_;
    uint64_t use_counter_ = 0;
    KvStandbyShipperStats stats_;
};

}  // namespace assistd::serve
