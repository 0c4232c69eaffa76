#pragma once
// The scheduler: one thread owns the Model and runs iteration-level
// continuous batching. Requests wait in a bounded queue; between decode steps
// queued requests are admitted and their prompts prefilled in chunks, while
// every running sequence advances by one token in the same decode() call.
// Output goes to a per-request GenerationChannel that the consumer (an HTTP
// coroutine, a test) drains; cancelling the channel frees the sequence at the
// next step. A request that completes leaves its sequence in the prefix
// cache, so a later prompt sharing its prefix prefills only the rest.
// Nothing here knows about HTTP.
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "engine/engine.h"
#include "serve/precision_policy.h"
#include "serve/prefix_cache.h"

namespace assistd::serve {

class KvStandbyShipper;

enum class FinishReason {
    kNone,             // still running
    kStop,             // end-of-generation token or a stop string
    kLength,           // max_tokens reached
    kCancelled,        // the consumer cancelled (client went away)
    kDeadlineExpired,  // waited in the queue past its deadline
    kError,            // see GenerationUpdate::error (e.g. the KV cache is full)
};
const char* finish_reason_name(FinishReason reason);

struct GenerationRequest {
    std::vector<engine::TokenId> prompt;
    engine::SamplerParams sampling;
    size_t max_tokens = 16;
    std::vector<std::string> stops;
    std::optional<engine::Precision> precision;  // pinned; otherwise the policy decides
    int64_t deadline_mono_ns = 0;                // 0: none; checked while queued
    bool ignore_eos = false;
    // The session's store key: its standby copies (kv_standby.h) are found and
    // updated under it. Empty: not a session's turn.
    std::string kv_key;
};

// What a consumer takes from a channel: new output since the last take.
struct GenerationUpdate {
    std::string text;                     // appended
    std::vector<engine::TokenId> tokens;  // appended
    // Where each non-empty piece of text the scheduler pushed (one per token,
    // less any it held back) ends in `text`, so a stream can send one chunk per
    // token even when the consumer takes several at once. Appended.
    std::vector<size_t> piece_ends;
    bool finished = false;
    FinishReason reason = FinishReason::kNone;
    Error error;                          // when reason == kError
    size_t prompt_tokens = 0;
    size_t cached_tokens = 0;             // prompt tokens reused from the prefix cache (known once running)
    size_t completion_tokens = 0;
};

// The handoff between the scheduler thread and one consumer: a mutex held
// for a few instructions per token, a waker to resume an async consumer and
// a condition variable for a blocking one.
class GenerationChannel {
public:
    explicit GenerationChannel(size_t prompt_tokens) : prompt_tokens_(prompt_tokens) {}

    // Consumer side.
    // The waker runs on the scheduler thread, under the channel's lock (keep
    // it tiny: post to an executor). If output is pending it runs at once.
    void set_waker(std::function<void()> waker);
    // After this returns the waker is never called again.
    void clear_waker();
    // Moves pending output into `out` (appending); true once finished.
    bool take(GenerationUpdate& out);
    // Blocks until finished or the timeout; collects everything. For tests and tools.
    bool wait_finished(GenerationUpdate& out, int64_t timeout_ms);
    void cancel() { cancelled_.store(true, std::memory_order_relaxed); }
    bool cancelled() const { return cancelled_.load(std::memory_order_relaxed); }

    // Scheduler side.
    void push(engine::TokenId token, std::string_view text);
    void push_text(std::string_view text);
    void set_cached_tokens(size_t n);
    void finish(FinishReason reason, Error error = {});

private:
    void wake_locked();

    std::mutex mu_;
    std::condition_variable cv_;
    std::function<void()> waker_;
    std::string text_;
    std::vector<size_t> piece_ends_;  // into text_
    std::vector<engine::TokenId> tokens_;
    size_t prompt_tokens_;
    size_t cached_tokens_ = 0;
    size_t completion_tokens_ = 0;
    bool finished_ = false;
    bool finish_taken_ = false;
    FinishReason reason_ = FinishReason::kNone;
    Error error_;
    std::atomic<bool> cancelled_{false};
};

struct SchedulerConfig {
    size_t max_queue = 256;            // queued (not yet running) requests; more are rejected
    size_t max_running = 16;           // sequences decoding at once (<= the model's max_sequences)
    size_t max_batch_tokens = 512;     // the model's max_batch_tokens
    size_t prefill_chunk_tokens = 256; // prompt tokens per step across all prefills
    std::optional<engine::Precision> fixed_precision;  // set: the policy is off
    PrecisionPolicyConfig policy;
    double policy_interval_s = 1.0;    // how often the policy is evaluated
    double policy_window_s = 10.0;     // figures are taken over this window
    // Prefix reuse: finished requests' sequences stay cached (see prefix_cache.h).
    bool prefix_cache = true;
    size_t prefix_cache_blocks = 0;       // budget in KV blocks; 0: half of the model's KV cache
    size_t prefix_cache_min_tokens = 16;  // shortest common prefix worth reusing
    KvDiskTier* kv_disk = nullptr;        // the disk tier under the prefix cache (kv_disk_tier.h); null: none
    // Standby KV (kv_standby.h): finished session turns ship their new KV
    // through the shipper; session prompts look in the store. Null: none.
    KvStandbyShipper* kv_standby_shipper = nullptr;
    KvStandbyStore* kv_standby_store = nullptr;
    // The scheduler thread prepares the first precision's weights before its
    // first request (else the first request pays the conversion). Off where
    // something else decodes with the model until the first request (tests).
    bool prepare_weights_at_start = false;
};

// Live figures for /metrics and tests; read from any thread.
struct SchedulerStats {
    size_t queue_depth = 0;
    size_t running = 0;
    size_t last_batch_sequences = 0;
    size_t last_batch_tokens = 0;
    uint64_t tokens_generated = 0;
    uint64_t steps = 0;
    uint64_t requests_finished = 0;
    size_t kv_blocks_in_use = 0;
    size_t kv_blocks_total = 0;
    engine::Precision precision = engine::Precision::kBF16;
    uint64_t precision_switches = 0;
    uint64_t prompt_tokens_prefilled = 0;  // prompt tokens computed (not taken from the prefix cache)
    uint64_t prefix_cache_hits = 0;
    uint64_t prefix_cache_misses = 0;
    uint64_t prefix_cache_reused_tokens = 0;
    uint64_t prefix_cache_evictions = 0;
    size_t prefix_cache_sequences = 0;
    size_t prefix_cache_blocks = 0;
    uint64_t kv_disk_hits = 0;          // prompts whose prefix came back from the disk tier
    uint64_t kv_disk_tokens = 0;        // prompt tokens the disk tier gave (not prefilled)
    uint64_t kv_disk_refused = 0;       // blobs that did not load (damaged, foreign): prefilled instead
    uint64_t kv_disk_bytes = 0;         // KV kept on disk (and queued for it)
    size_t kv_disk_entries = 0;
    uint64_t kv_standby_hits = 0;        // prompts whose prefix came from a peer's standby copy
    uint64_t kv_standby_tokens = 0;      // ... prompt tokens it gave (not prefilled)
    uint64_t kv_standby_refused = 0;     // copies that did not load at use, or runs refused on arrival
    uint64_t kv_standby_sent_runs = 0;   // runs shipped to standby copies
    uint64_t kv_standby_sent_bytes = 0;
    uint64_t kv_standby_sent_tokens = 0;
    uint64_t kv_standby_send_dropped = 0;  // runs the peer link refused (budget, no replica)
    double kv_standby_export_seconds = 0;  // scheduler time spent exporting them
    uint64_t kv_standby_received_runs = 0;
    uint64_t kv_standby_received_bytes = 0;
    uint64_t kv_standby_gaps = 0;        // received runs that continued a prefix this node lacks
    uint64_t kv_standby_bytes = 0;       // standby KV held for peers now
    size_t kv_standby_sessions = 0;
};

// One decode step, reported once per step (not per token) to keep the hot
// path free of per-token locks in the metrics library.
struct StepReport {
    size_t sequences = 0;
    size_t tokens = 0;
    double seconds = 0;
    engine::Precision precision = engine::Precision::kBF16;
    std::span<const double> time_to_first_token_s;
    // ... of requests whose prefix was imported (a recovery): from peers' standby KV, from the disk tier
    std::span<const double> standby_time_to_first_token_s;
    std::span<const double> disk_time_to_first_token_s;
    std::span<const double> inter_token_s;
    size_t tokens_generated = 0;
};

struct FinishReport {
    FinishReason reason = FinishReason::kNone;
    double latency_s = 0;  // submit to finish
    size_t prompt_tokens = 0;
    size_t cached_tokens = 0;
    size_t completion_tokens = 0;
};

// Called on the scheduler thread.
class SchedulerObserver {
public:
    virtual ~SchedulerObserver() = default;
    virtual void on_step(const StepReport&) {}
    virtual void on_finish(const FinishReport&) {}
    virtual void on_precision_switch(engine::Precision /*from*/, engine::Precision /*to*/) {}
};

class Scheduler {
public:
    // The model must outlive the scheduler; the scheduler is its only decode() caller.
    Scheduler(engine::Model& model, const SchedulerConfig& config, Clock& clock,
              SchedulerObserver* observer = nullptr);
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    void start();
    // The weights of the first precision are prepared (at once unless
    // prepare_weights_at_start): a node is not ready before.
    bool warmed() const { return warmed_.load(); }
    // Finishes every queued and running request as cancelled, then joins.
    void stop();

    // kInvalidArgument: empty prompt; kOutOfRange: prompt + max_tokens exceed
    // the context; kResourceExhausted: the queue is full (answer 429).
    Result<std::shared_ptr<GenerationChannel>> submit(GenerationRequest request,
                                                       std::function<void()> waker = nullptr);

    SchedulerStats stats() const;
    const SchedulerConfig& config() const { return config_; }
    // Queued plus running: zero means idle (used by drain).
    size_t in_flight() const;

private:
    struct Active;
    void run();
    void admit(int64_t now);
    void step();
    void deliver(Active& a, engine::TokenId token, int64_t now);
    void finish(Active& a, FinishReason reason, Error error = {});
    void maybe_evaluate_policy(int64_t now);
    size_t kv_blocks_needed(const GenerationRequest& r) const;
    // Sends the KV of `tokens` (held by `seq`) that the standby copies of a's session lack.
    void ship_standby(const Active& a, engine::SequenceId seq, std::span<const engine::TokenId> tokens);
    engine::Precision precision_for(const Active& a) const;
    void publish_stats();
    void release_sequence(Active& a, FinishReason reason);

    engine::Model& model_;
    SchedulerConfig config_;
    Clock& clock_;
    SchedulerObserver* observer_;
    PrecisionPolicy policy_;
    PrefixCache prefix_cache_;  // scheduler thread (and stop() after the join)

    mutable std::mutex mu_;  // guards queue_ and stopping_
    std::condition_variable cv_;
    std::deque<std::unique_ptr<Active>> queue_;
    bool stopping_ = false;
    std::thread thread_;

    // Scheduler-thread state.
    std::vector<std::unique_ptr<Active>> running_;
    std::vector<engine::BatchEntry> entries_;
    std::vector<Active*> entry_owner_;
    std::vector<double> ttft_, standby_ttft_, disk_ttft_;
    std::vector<double> inter_token_;
    std::vector<double> step_latency_window_;   // ring of recent step latencies
    std::vector<int64_t> finish_times_;          // ring of recent finish times
    size_t step_latency_next_ = 0, finish_next_ = 0;
    int64_t last_policy_eval_ns_ = 0;
    // KV blocks the running requests may grow into (prompt + max_tokens each):
    // admission keeps this within the cache, so a running stream never runs out.
    size_t kv_reserved_ = 0;

    // Published figures.
    std::atomic<size_t> queue_depth_{0}, running_count_{0}, batch_sequences_{0}, batch_tokens_{0};
    std::atomic<uint64_t> tokens_generated_{0}, steps_{0}, requests_finished_{0}, precision_switches_{0};
    std::atomic<size_t> kv_in_use_{0};
    std::atomic<uint64_t> prefilled_{0}, cache_hits_{0}, cache_misses_{0}, cache_reused_{0}, cache_evictions_{0};
    std::atomic<size_t> cache_sequences_{0}, cache_blocks_{0};
    std::atomic<uint64_t> disk_hits_{0}, disk_tokens_{0}, disk_refused_{0};
    std::atomic<uint64_t> standby_hits_{0}, standby_tokens_{0};
    std::atomic<uint64_t> shipped_runs_{0}, shipped_bytes_{0}, shipped_tokens_{0}, ship_dropped_{0}, ship_ns_{0};
    std::atomic<bool> warmed_{false};
    std::atomic<int> precision_{static_cast<int>(engine::Precision::kBF16)};
};

}  // namespace assistd::serve
