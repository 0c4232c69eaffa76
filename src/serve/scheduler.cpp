#include "serve/scheduler.h"

#include <spdlog/spdlog.h>

#include "serve/kv_disk_tier.h"
#include "serve/kv_standby.h"
#include "serve/kv_standby_store.h"

#include <algorithm>
#include <chrono>
#include <string_view>
#include <utility>

namespace assistd::serve {

using engine::BatchEntry;
using engine::Precision;
using engine::TokenId;

const char* finish_reason_name(FinishReason reason) {
    switch (reason) {
        case FinishReason::kNone: return "none";
        case FinishReason::kStop: return "stop";
        case FinishReason::kLength: return "length";
        case FinishReason::kCancelled: return "cancelled";
        case FinishReason::kDeadlineExpired: return "deadline_expired";
        case FinishReason::kError: return "error";
    }
    return "unknown";
}

// ---- GenerationChannel ------------------------------------------------------

void GenerationChannel::set_waker(std::function<void()> waker) {
    std::lock_guard lk(mu_);
    waker_ = std::move(waker);
    if (waker_ && (!text_.empty() || !tokens_.empty() || (finished_ && !finish_taken_))) waker_();
}

void GenerationChannel::clear_waker() {
    std::lock_guard lk(mu_);
    waker_ = nullptr;
}

bool GenerationChannel::take(GenerationUpdate& out) {
    std::lock_guard lk(mu_);
    const size_t base = out.text.size();
    for (size_t end : piece_ends_) out.piece_ends.push_back(base + end);
    piece_ends_.clear();
    out.text += text_;
    text_.clear();
    out.tokens.insert(out.tokens.end(), tokens_.begin(), tokens_.end());
    tokens_.clear();
    out.prompt_tokens = prompt_tokens_;
    out.cached_tokens = cached_tokens_;
    out.completion_tokens = completion_tokens_;
    if (finished_) {
        finish_taken_ = true;
        out.finished = true;
        out.reason = reason_;
        out.error = error_;
    }
    return finished_;
}

bool GenerationChannel::wait_finished(GenerationUpdate& out, int64_t timeout_ms) {
    {
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return finished_; });
    }
    return take(out);
}

void GenerationChannel::wake_locked() {
    if (waker_) waker_();
}

void GenerationChannel::push(TokenId token, std::string_view text) {
    {
        std::lock_guard lk(mu_);
        tokens_.push_back(token);
        if (!text.empty()) {
            text_.append(text);
            piece_ends_.push_back(text_.size());
        }
        ++completion_tokens_;
        wake_locked();
    }
    cv_.notify_all();
}

void GenerationChannel::push_text(std::string_view text) {
    if (text.empty()) return;
    {
        std::lock_guard lk(mu_);
        text_.append(text);
        piece_ends_.push_back(text_.size());
        wake_locked();
    }
    cv_.notify_all();
}

void GenerationChannel::set_cached_tokens(size_t n) {
    std::lock_guard lk(mu_);
    cached_tokens_ = n;
}

void GenerationChannel::finish(FinishReason reason, Error error) {
    {
        std::lock_guard lk(mu_);
        if (finished_) return;
        finished_ = true;
        reason_ = reason;
        error_ = std::move(error);
        wake_locked();
    }
    cv_.notify_all();
}

// ---- Scheduler ----------------------------------------------------------------

struct Scheduler::Active {
    GenerationRequest req;
    std::shared_ptr<GenerationChannel> channel;
    engine::SequenceId seq = -1;
    size_t prefilled = 0;      // prompt tokens already in the KV cache
    size_t cached = 0;         // of which taken from the prefix cache
    PrefixCache::Source cached_from = PrefixCache::Source::kNone;
    size_t pending = 0;        // tokens of this request in the current decode
    std::vector<TokenId> history;
    std::optional<engine::Sampler> sampler;
    std::optional<engine::StreamingDetokenizer> detok;
    std::string text;          // generated text so far
    size_t emitted = 0;        // bytes of text handed to the channel
    size_t max_stop_len = 0;
    size_t generated = 0;
    TokenId last = -1;
    int64_t submitted_ns = 0;
    int64_t last_token_ns = 0;
    size_t kv_reserved = 0;    // blocks counted in Scheduler::kv_reserved_
    bool done = false;
};

namespace {
constexpr size_t kLatencyRing = 256;
constexpr size_t kFinishRing = 4096;

PrefixCacheConfig prefix_cache_config(const engine::Model& model, const SchedulerConfig& c) {
    PrefixCacheConfig p;
    if (c.prefix_cache)
        p.max_blocks = c.prefix_cache_blocks ? c.prefix_cache_blocks : std::max<size_t>(1, model.total_kv_blocks() / 2);
    p.min_match_tokens = c.prefix_cache_min_tokens;
    p.disk = c.prefix_cache ? c.kv_disk : nullptr;
    p.standby = c.prefix_cache ? c.kv_standby_store : nullptr;
    return p;
}
}  // namespace

Scheduler::Scheduler(engine::Model& model, const SchedulerConfig& config, Clock& clock, SchedulerObserver* observer)
    : model_(model),
      config_(config),
      clock_(clock),
      observer_(observer),
      policy_(config.policy),
      prefix_cache_(model, prefix_cache_config(model, config)) {
    config_.max_running = std::max<size_t>(1, config_.max_running);
    config_.max_batch_tokens = std::max<size_t>(config_.max_running + 1, config_.max_batch_tokens);
    config_.prefill_chunk_tokens = std::max<size_t>(1, config_.prefill_chunk_tokens);
    precision_.store(static_cast<int>(config_.fixed_precision.value_or(policy_.current())));
    running_.reserve(config_.max_running);
    entries_.reserve(config_.max_running);
    entry_owner_.reserve(config_.max_running);
    ttft_.reserve(config_.max_running);
    inter_token_.reserve(config_.max_running);
    step_latency_window_.reserve(kLatencyRing);
    finish_times_.reserve(kFinishRing);
    kv_in_use_.store(model_.total_kv_blocks() - model_.free_kv_blocks());
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
    std::lock_guard lk(mu_);
    if (thread_.joinable() || stopping_) return;
    thread_ = std::thread([this] { run(); });
}

void Scheduler::stop() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    // Whatever is left (also when never started) ends as cancelled.
    std::deque<std::unique_ptr<Active>> left;
    {
        std::lock_guard lk(mu_);
        left.swap(queue_);
    }
    for (auto& a : left) finish(*a, FinishReason::kCancelled);
    for (auto& a : running_) finish(*a, FinishReason::kCancelled);
    running_.clear();
    prefix_cache_.clear();
    queue_depth_.store(0);
    running_count_.store(0);
    publish_stats();
}

Result<std::shared_ptr<GenerationChannel>> Scheduler::submit(GenerationRequest request, std::function<void()> waker) {
    const auto& info = model_.info();
    if (request.prompt.empty())
        return make_error(ErrorCode::kInvalidArgument, "the prompt is empty: give at least one token");
    if (request.max_tokens == 0) return make_error(ErrorCode::kInvalidArgument, "max_tokens must be at least 1");
    for (TokenId t : request.prompt)
        if (t < 0 || static_cast<size_t>(t) >= info.n_vocab)
            return make_error(ErrorCode::kInvalidArgument,
                              "prompt token id " + std::to_string(t) + " is outside the vocabulary");
    if (kv_blocks_needed(request) > model_.total_kv_blocks())
        return make_error(ErrorCode::kOutOfRange,
                          "the prompt (" + std::to_string(request.prompt.size()) + " tokens) plus max_tokens (" +
                              std::to_string(request.max_tokens) + ") need more KV cache than this server has (" +
                              std::to_string(model_.total_kv_blocks() * model_.kv_block_tokens()) +
                              " tokens in all); shorten the prompt or lower max_tokens");
    if (request.prompt.size() + request.max_tokens > info.n_ctx)
        return make_error(ErrorCode::kOutOfRange,
                          "the prompt (" + std::to_string(request.prompt.size()) + " tokens) plus max_tokens (" +
                              std::to_string(request.max_tokens) + ") exceeds the context of " +
                              std::to_string(info.n_ctx) + " tokens; shorten the prompt or lower max_tokens");

    auto a = std::make_unique<Active>();
    a->channel = std::make_shared<GenerationChannel>(request.prompt.size());
    if (waker) a->channel->set_waker(std::move(waker));
    a->req = std::move(request);
    a->submitted_ns = clock_.now_mono_ns();
    auto channel = a->channel;
    {
        std::lock_guard lk(mu_);
        if (stopping_)
            return make_error(ErrorCode::kResourceExhausted, "the scheduler is shutting down; retry on another instance");
        if (queue_.size() >= config_.max_queue)
            return make_error(ErrorCode::kResourceExhausted,
                              "the request queue is full (" + std::to_string(config_.max_queue) +
                                  " waiting); retry later");
        queue_.push_back(std::move(a));
        queue_depth_.store(queue_.size());
    }
    cv_.notify_one();
    return channel;
}

SchedulerStats Scheduler::stats() const {
    SchedulerStats s;
    s.queue_depth = queue_depth_.load();
    s.running = running_count_.load();
    s.last_batch_sequences = batch_sequences_.load();
    s.last_batch_tokens = batch_tokens_.load();
    s.tokens_generated = tokens_generated_.load();
    s.steps = steps_.load();
    s.requests_finished = requests_finished_.load();
    s.kv_blocks_in_use = kv_in_use_.load();
    s.kv_blocks_total = model_.total_kv_blocks();
    s.precision = static_cast<Precision>(precision_.load());
    s.precision_switches = precision_switches_.load();
    s.prompt_tokens_prefilled = prefilled_.load();
    s.prefix_cache_hits = cache_hits_.load();
    s.prefix_cache_misses = cache_misses_.load();
    s.prefix_cache_reused_tokens = cache_reused_.load();
    s.prefix_cache_evictions = cache_evictions_.load();
    s.prefix_cache_sequences = cache_sequences_.load();
    s.prefix_cache_blocks = cache_blocks_.load();
    s.kv_disk_hits = disk_hits_.load();
    s.kv_disk_tokens = disk_tokens_.load();
    s.kv_disk_refused = disk_refused_.load();
    if (config_.kv_disk) {
        const auto d = config_.kv_disk->stats();
        s.kv_disk_bytes = d.bytes;
        s.kv_disk_entries = d.entries;
    }
    s.kv_standby_hits = standby_hits_.load();
    s.kv_standby_tokens = standby_tokens_.load();
    s.kv_standby_sent_runs = shipped_runs_.load();
    s.kv_standby_sent_bytes = shipped_bytes_.load();
    s.kv_standby_sent_tokens = shipped_tokens_.load();
    s.kv_standby_send_dropped = ship_dropped_.load();
    s.kv_standby_export_seconds = static_cast<double>(ship_ns_.load()) / 1e9;
    if (config_.kv_standby_store) {
        const auto k = config_.kv_standby_store->stats();
        s.kv_standby_received_runs = k.runs;
        s.kv_standby_received_bytes = k.bytes_in;
        s.kv_standby_refused = k.refused;  // on arrival and at use
        s.kv_standby_gaps = k.gaps;
        s.kv_standby_bytes = k.bytes;
        s.kv_standby_sessions = k.sessions;
    }
    return s;
}

size_t Scheduler::in_flight() const {
    std::lock_guard lk(mu_);
    return queue_.size() + running_count_.load();
}

void Scheduler::run() {
    // The weights of the precision the first requests will use are prepared
    // now, not on the first request: a node that takes sessions over after a
    // failover (or restarts) has not served before, and the conversion would
    // land on the first recovered turn. Requests that arrive meanwhile queue.
    if (config_.prepare_weights_at_start) {
        if (auto st = model_.prepare_precision(static_cast<Precision>(precision_.load())); !st)
            spdlog::warn("scheduler: preparing the weights failed ({}); the first request prepares them",
                         st.error().message);
    }
    warmed_.store(true);
    for (;;) {
        {
            std::unique_lock lk(mu_);
            if (running_.empty() && !stopping_) cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_) return;
        }
        const int64_t now = clock_.now_mono_ns();
        admit(now);
        if (running_.empty()) {
            // Nothing could be admitted (e.g. no sequence slot): try again shortly.
            std::unique_lock lk(mu_);
            cv_.wait_for(lk, std::chrono::milliseconds(2), [&] { return stopping_; });
            continue;
        }
        step();
        publish_stats();
        maybe_evaluate_policy(clock_.now_mono_ns());
    }
}

void Scheduler::admit(int64_t now) {
    std::vector<std::unique_ptr<Active>> dropped;
    {
        std::lock_guard lk(mu_);
        for (auto it = queue_.begin(); it != queue_.end();) {
            Active& a = **it;
            if (a.channel->cancelled() || (a.req.deadline_mono_ns != 0 && now > a.req.deadline_mono_ns)) {
                dropped.push_back(std::move(*it));
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
        while (running_.size() < config_.max_running && !queue_.empty()) {
            // Admit only what the KV cache can hold at full length, oldest first;
            // the rest waits for running requests to finish (or its deadline).
            // Cached prefixes do not count: they give way (make_room below).
            const size_t need = kv_blocks_needed(queue_.front()->req);
            if (!running_.empty() && kv_reserved_ + need > model_.total_kv_blocks()) break;
            // A sequence holding the longest cached prefix of the prompt, or a fresh one.
            auto seq = prefix_cache_.acquire(queue_.front()->req.prompt, queue_.front()->req.kv_key);
            if (!seq) {
                if (!running_.empty()) break;  // wait for a running request to free its slot
                auto a = std::move(queue_.front());
                queue_.pop_front();
                a->channel->finish(FinishReason::kError, seq.error());
                continue;
            }
            auto a = std::move(queue_.front());
            queue_.pop_front();
            a->seq = seq->seq;
            a->prefilled = a->cached = seq->reused;
            a->cached_from = seq->source;
            a->channel->set_cached_tokens(seq->reused);
            a->kv_reserved = need;
            kv_reserved_ += need;
            // Cached sequences give up blocks for the prompt's remaining prefill (plus a copied tail).
            const size_t bt = std::max<size_t>(1, model_.kv_block_tokens());
            prefix_cache_.make_room((a->req.prompt.size() - a->prefilled + bt - 1) / bt + 1);
            a->history.reserve(a->req.prompt.size() + a->req.max_tokens);
            a->history = a->req.prompt;
            a->sampler.emplace(a->req.sampling, model_.info().n_vocab);
            a->detok.emplace(model_.tokenizer());
            for (const auto& s : a->req.stops) a->max_stop_len = std::max(a->max_stop_len, s.size());
            running_.push_back(std::move(a));
        }
        queue_depth_.store(queue_.size());
        running_count_.store(running_.size());
    }
    for (auto& a : dropped)
        finish(*a, a->channel->cancelled() ? FinishReason::kCancelled : FinishReason::kDeadlineExpired,
               a->channel->cancelled() ? Error{}
                                       : make_error(ErrorCode::kResourceExhausted,
                                                    "the request waited in the queue past its deadline; retry later"));
}

Precision Scheduler::precision_for(const Active& a) const {
    if (a.req.precision) return *a.req.precision;
    if (config_.fixed_precision) return *config_.fixed_precision;
    return policy_.current();
}

void Scheduler::step() {
    for (auto& a : running_)
        if (a->channel->cancelled()) finish(*a, FinishReason::kCancelled);
    std::erase_if(running_, [](const auto& a) { return a->done; });
    if (running_.empty()) {
        running_count_.store(0);
        return;
    }

    size_t decoding = 0;
    for (auto& a : running_) decoding += a->prefilled == a->req.prompt.size() ? 1 : 0;
    size_t prefill_budget = std::min(config_.prefill_chunk_tokens, config_.max_batch_tokens - decoding);

    ttft_.clear();
    standby_ttft_.clear();
    disk_ttft_.clear();
    inter_token_.clear();
    size_t step_sequences = 0, step_tokens = 0, step_generated = 0, step_prefilled = 0;
    double step_seconds = 0;
    Precision step_precision = policy_.current();

    // One decode() per distinct precision in the running set (usually one).
    std::vector<Precision> precisions;
    for (auto& a : running_) {
        const Precision p = precision_for(*a);
        if (std::find(precisions.begin(), precisions.end(), p) == precisions.end()) precisions.push_back(p);
    }
    for (Precision p : precisions) {
        entries_.clear();
        entry_owner_.clear();
        for (auto& a : running_) {
            if (a->done || precision_for(*a) != p) continue;
            const size_t prompt_len = a->req.prompt.size();
            if (a->prefilled < prompt_len) {
                const size_t n = std::min(prompt_len - a->prefilled, prefill_budget);
                if (n == 0) continue;
                prefill_budget -= n;
                a->pending = n;
                entries_.push_back(BatchEntry{a->seq, std::span<const TokenId>(a->req.prompt.data() + a->prefilled, n)});
            } else {
                a->pending = 1;
                entries_.push_back(BatchEntry{a->seq, std::span<const TokenId>(&a->last, 1)});
            }
            entry_owner_.push_back(a.get());
        }
        while (!entries_.empty()) {
            const int64_t t0 = clock_.now_mono_ns();
            auto logits = model_.decode(entries_, p);
            const int64_t t1 = clock_.now_mono_ns();
            if (!logits) {
                if (logits.error().code == ErrorCode::kResourceExhausted) {
                    // Cached prefixes give way to running requests first.
                    if (prefix_cache_.evict_one()) continue;
                    // The KV cache is full: fail the newest request, the others continue.
                    Active* victim = entry_owner_.back();
                    finish(*victim, FinishReason::kError,
                           make_error(ErrorCode::kResourceExhausted,
                                      "the KV cache is full: " + logits.error().message +
                                          "; retry later or with a shorter request"));
                    entries_.pop_back();
                    entry_owner_.pop_back();
                    continue;
                }
                for (Active* a : entry_owner_) finish(*a, FinishReason::kError, logits.error());
                entries_.clear();
                break;
            }
            step_seconds += static_cast<double>(t1 - t0) / 1e9;
            step_precision = p;
            step_sequences += entries_.size();
            const size_t n_vocab = model_.info().n_vocab;
            for (size_t i = 0; i < entries_.size(); ++i) {
                Active& a = *entry_owner_[i];
                step_tokens += a.pending;
                const bool was_prefilling = a.prefilled < a.req.prompt.size();
                if (was_prefilling) {
                    a.prefilled += a.pending;
                    step_prefilled += a.pending;
                    if (a.prefilled < a.req.prompt.size()) continue;  // more prompt to go
                }
                const std::span<const float> row = logits->subspan(i * n_vocab, n_vocab);
                const TokenId t = a.sampler->sample(row, a.history);
                const size_t before = a.generated;
                deliver(a, t, t1);
                step_generated += a.generated - before;
                // The prompt's KV goes to the standby copies now, while the answer
                // is decoded (after the first token: it does not wait for this).
                if (was_prefilling && !a.done && a.seq >= 0) ship_standby(a, a.seq, a.req.prompt);
            }
            break;
        }
    }
    std::erase_if(running_, [](const auto& a) { return a->done; });
    running_count_.store(running_.size());
    batch_sequences_.store(step_sequences);
    batch_tokens_.store(step_tokens);
    tokens_generated_.fetch_add(step_generated, std::memory_order_relaxed);
    prefilled_.fetch_add(step_prefilled, std::memory_order_relaxed);
    steps_.fetch_add(1, std::memory_order_relaxed);
    if (step_sequences > 0) {
        if (step_latency_window_.size() < kLatencyRing) {
            step_latency_window_.push_back(step_seconds);
        } else {
            step_latency_window_[step_latency_next_] = step_seconds;
            step_latency_next_ = (step_latency_next_ + 1) % kLatencyRing;
        }
    }
    if (observer_ && step_sequences > 0) {
        StepReport r;
        r.sequences = step_sequences;
        r.tokens = step_tokens;
        r.seconds = step_seconds;
        r.precision = step_precision;
        r.time_to_first_token_s = ttft_;
        r.standby_time_to_first_token_s = standby_ttft_;
        r.disk_time_to_first_token_s = disk_ttft_;
        r.inter_token_s = inter_token_;
        r.tokens_generated = step_generated;
        observer_->on_step(r);
    }
}

void Scheduler::deliver(Active& a, TokenId token, int64_t now) {
    if (a.generated == 0 && a.last_token_ns == 0) {
        ttft_.push_back(static_cast<double>(now - a.submitted_ns) / 1e9);
        if (a.cached_from == PrefixCache::Source::kStandby) standby_ttft_.push_back(ttft_.back());
        if (a.cached_from == PrefixCache::Source::kDisk) disk_ttft_.push_back(ttft_.back());
    }
    else
        inter_token_.push_back(static_cast<double>(now - a.last_token_ns) / 1e9);
    a.last_token_ns = now;

    if (!a.req.ignore_eos && model_.tokenizer().is_end_of_generation(token)) {
        a.text += a.detok->flush();
        if (a.text.size() > a.emitted) a.channel->push_text(std::string_view(a.text).substr(a.emitted));
        a.emitted = a.text.size();
        finish(a, FinishReason::kStop);
        return;
    }
    ++a.generated;
    a.history.push_back(token);
    a.last = token;
    a.text += a.detok->feed(token);
    // Stop strings can only start within the last max_stop_len bytes before new text.
    const size_t from = a.emitted > a.max_stop_len ? a.emitted - a.max_stop_len : 0;
    const engine::StopMatch m = engine::find_stop(std::string_view(a.text).substr(from), a.req.stops);
    if (m.position != std::string::npos) {
        const size_t end = std::max(from + m.position, a.emitted);
        a.channel->push(token, std::string_view(a.text).substr(a.emitted, end - a.emitted));
        a.text.resize(end);
        a.emitted = end;
        finish(a, FinishReason::kStop);
        return;
    }
    if (a.generated >= a.req.max_tokens) {
        a.text += a.detok->flush();
        a.channel->push(token, std::string_view(a.text).substr(a.emitted));
        a.emitted = a.text.size();
        finish(a, FinishReason::kLength);
        return;
    }
    const size_t safe = a.text.size() - std::min(m.hold_back, a.text.size());
    if (safe > a.emitted) {
        a.channel->push(token, std::string_view(a.text).substr(a.emitted, safe - a.emitted));
        a.emitted = safe;
    } else {
        a.channel->push(token, {});
    }
}

void Scheduler::finish(Active& a, FinishReason reason, Error error) {
    if (a.done) return;
    a.done = true;
    // The consumer hears first: releasing may export KV for the standby copies.
    a.channel->finish(reason, std::move(error));
    release_sequence(a, reason);
    kv_reserved_ -= a.kv_reserved;
    a.kv_reserved = 0;
    const int64_t now = clock_.now_mono_ns();
    if (finish_times_.size() < kFinishRing) {
        finish_times_.push_back(now);
    } else {
        finish_times_[finish_next_] = now;
        finish_next_ = (finish_next_ + 1) % kFinishRing;
    }
    requests_finished_.fetch_add(1, std::memory_order_relaxed);
    if (observer_) {
        FinishReport r;
        r.reason = reason;
        r.latency_s = static_cast<double>(now - a.submitted_ns) / 1e9;
        r.prompt_tokens = a.req.prompt.size();
        r.cached_tokens = a.cached;
        r.completion_tokens = a.generated;
        observer_->on_finish(r);
    }
}

// A completed request's sequence goes to the prefix cache. Its KV holds the
// prompt and every generated token but the last (sampled, never fed back).
// A cancelled or failed request's sequence is freed: its KV may stop mid-prompt.
void Scheduler::release_sequence(Active& a, FinishReason reason) {
    if (a.seq < 0) return;
    const engine::SequenceId seq = a.seq;
    a.seq = -1;
    if (prefix_cache_.enabled() && (reason == FinishReason::kStop || reason == FinishReason::kLength)) {
        const size_t held = model_.sequence_length(seq);
        if (held > 0 && held <= a.history.size()) {
            a.history.resize(held);
            ship_standby(a, seq, a.history);  // before retain(), which may free the sequence
            prefix_cache_.retain(seq, std::move(a.history));
            return;
        }
    }
    model_.free_sequence(seq);
}

void Scheduler::ship_standby(const Active& a, engine::SequenceId seq, std::span<const TokenId> tokens) {
    if (!config_.kv_standby_shipper || a.req.kv_key.empty()) return;
    config_.kv_standby_shipper->turn_finished(a.req.kv_key, tokens, [&](size_t begin, size_t end) {
        return model_.export_kv(seq, begin, end, tokens.subspan(begin, end - begin));
    });
}

size_t Scheduler::kv_blocks_needed(const GenerationRequest& r) const {
    const size_t block = std::max<size_t>(1, model_.kv_block_tokens());
    return (r.prompt.size() + r.max_tokens + block - 1) / block;
}

void Scheduler::maybe_evaluate_policy(int64_t now) {
    if (config_.fixed_precision) return;
    if (last_policy_eval_ns_ != 0 && static_cast<double>(now - last_policy_eval_ns_) / 1e9 < config_.policy_interval_s)
        return;
    last_policy_eval_ns_ = now;
    PrecisionFigures f;
    if (!step_latency_window_.empty()) {
        std::vector<double> lat = step_latency_window_;
        const size_t k = std::min(lat.size() - 1, static_cast<size_t>(0.95 * static_cast<double>(lat.size())));
        std::nth_element(lat.begin(), lat.begin() + static_cast<ptrdiff_t>(k), lat.end());
        f.p95_latency_s = lat[k];
    }
    const int64_t window_ns = static_cast<int64_t>(config_.policy_window_s * 1e9);
    size_t recent = 0;
    for (int64_t t : finish_times_) recent += now - t <= window_ns ? 1 : 0;
    f.throughput_rps = config_.policy_window_s > 0 ? static_cast<double>(recent) / config_.policy_window_s : 0;
    const Precision before = policy_.current();
    if (policy_.evaluate(f, static_cast<double>(now) / 1e9)) {
        precision_.store(static_cast<int>(policy_.current()));
        precision_switches_.fetch_add(1);
        if (observer_) observer_->on_precision_switch(before, policy_.current());
    }
}

void Scheduler::publish_stats() {
    kv_in_use_.store(model_.total_kv_blocks() - model_.free_kv_blocks());
    const PrefixCacheStats& c = prefix_cache_.stats();
    cache_hits_.store(c.hits);
    cache_misses_.store(c.misses);
    cache_reused_.store(c.reused_tokens);
    cache_evictions_.store(c.evictions);
    cache_sequences_.store(c.sequences);
    cache_blocks_.store(c.blocks);
    disk_hits_.store(c.disk_hits);
    disk_tokens_.store(c.disk_tokens);
    disk_refused_.store(c.disk_refused);
    standby_hits_.store(c.standby_hits);
    standby_tokens_.store(c.standby_tokens);
    if (config_.kv_standby_shipper) {
        const auto& k = config_.kv_standby_shipper->stats();
        shipped_runs_.store(k.runs);
        shipped_bytes_.store(k.bytes);
        shipped_tokens_.store(k.tokens);
        ship_dropped_.store(k.dropped);
        ship_ns_.store(static_cast<uint64_t>(k.export_seconds * 1e9));
    }
}

}  // namespace assistd::serve
