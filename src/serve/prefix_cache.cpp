#include "serve/prefix_cache.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <tuple>
#include <utility>

#include "serve/kv_disk_tier.h"
#include "serve/kv_standby_store.h"
#include "serve/token_prefix.h"

namespace assistd::serve {

using engine::SequenceId;
using engine::TokenId;

namespace {
constexpr size_t kNone = static_cast<size_t>(-1);
}  // namespace

std::pair<size_t, size_t> PrefixCache::longest_entry(std::span<const TokenId> usable) const {
    size_t best = kNone, best_len = 0;
    for (size_t i = 0; i < entries_.size(); ++i) {
        const size_t len = common_prefix(usable, entries_[i].tokens);
        if (len > best_len) best = i, best_len = len;
    }
    return {best, best_len};
}

PrefixCache::PrefixCache(engine::Model& model, const PrefixCacheConfig& config) : model_(model), config_(config) {
    config_.min_match_tokens = std::max<size_t>(1, config_.min_match_tokens);
}

PrefixCache::~PrefixCache() { clear(); }

size_t PrefixCache::blocks_for(size_t tokens) const {
    const size_t bt = std::max<size_t>(1, model_.kv_block_tokens());
    return (tokens + bt - 1) / bt;
}

void PrefixCache::evict(size_t index, bool to_disk) {
    Entry& e = entries_[index];
    if (to_disk && config_.disk && e.tokens.size() >= config_.min_match_tokens) {
        auto blob = model_.export_kv(e.seq, 0, e.tokens.size(), e.tokens);
        if (blob)
            config_.disk->put(std::move(e.tokens), std::move(*blob));
        else
            spdlog::warn("prefix cache: an entry's KV could not be exported to disk: {}", blob.error().message);
    }
    model_.free_sequence(e.seq);
    stats_.blocks -= e.blocks;
    if (index + 1 != entries_.size()) e = std::move(entries_.back());
    entries_.pop_back();
    stats_.sequences = entries_.size();
}

size_t PrefixCache::lru_index(size_t keep) const {
    size_t best = kNone;
    for (size_t i = 0; i < entries_.size(); ++i)
        if (i != keep && (best == kNone || entries_[i].last_used < entries_[best].last_used)) best = i;
    return best;
}

std::optional<SequenceId> PrefixCache::free_slot() {
    Result<SequenceId> seq = make_error(ErrorCode::kResourceExhausted, "");
    while (!(seq = model_.create_sequence()) && seq.error().code == ErrorCode::kResourceExhausted && evict_one()) {
    }
    if (!seq) return std::nullopt;
    return *seq;
}

std::optional<PrefixCache::Acquired> PrefixCache::acquire_from_disk(std::span<const TokenId> usable,
                                                                    size_t better_than) {
    auto found = config_.disk->take_longest(usable, better_than);
    if (!found) return std::nullopt;
    auto seq = free_slot();
    if (!seq) return std::nullopt;
    auto tokens = model_.import_kv(*seq, found->blob);
    // The blob must hold this prompt's tokens: a file under another conversation's name is not used.
    const bool fits = tokens && tokens->size() >= found->match &&
                      common_prefix(usable, *tokens) >= found->match;
    if (!fits || !model_.truncate_sequence(*seq, found->match)) {
        model_.free_sequence(*seq);
        ++stats_.disk_refused;
        config_.disk->count_refused();
        spdlog::warn("prefix cache: a KV blob from the disk tier was refused ({}); the prompt is prefilled",
                     tokens ? "its tokens are not the prompt's" : tokens.error().message);
        return std::nullopt;
    }
    ++stats_.hits;
    ++stats_.disk_hits;
    stats_.reused_tokens += found->match;
    stats_.disk_tokens += found->match;
    return Acquired{*seq, found->match, Source::kDisk};
}

std::optional<PrefixCache::Acquired> PrefixCache::acquire_from_standby(std::string_view key,
                                                                       std::span<const TokenId> usable,
                                                                       size_t better_than) {
    // A slot first: a chain taken is gone from the store.
    auto seq = free_slot();
    if (!seq) return std::nullopt;
    const auto t0 = std::chrono::steady_clock::now();
    auto found = config_.standby->take(key, usable, better_than);
    if (!found) {
        model_.free_sequence(*seq);
        return std::nullopt;
    }
    const auto t1 = std::chrono::steady_clock::now();
    // Run after run from position 0; each is cut where the session's next run begins.
    std::string why;
    size_t held = 0;
    for (const auto& part : found->parts) {
        auto tokens = model_.import_kv(*seq, part.blob);
        if (!tokens) {
            why = tokens.error().message;
            break;
        }
        if (common_prefix(usable.subspan(std::min(held, usable.size())), *tokens) <
            std::min(part.end, found->match) - held) {
            why = "its tokens are not the prompt's";
            break;
        }
        held = std::min(part.end, found->match);
        if (auto cut = model_.truncate_sequence(*seq, held); !cut) {
            why = cut.error().message;
            break;
        }
        if (held >= found->match) break;
    }
    if (why.empty() && held < found->match) why = "its runs end before the prefix they claim";
    if (!why.empty()) {
        model_.free_sequence(*seq);
        ++stats_.standby_refused;
        config_.standby->count_refused();
        spdlog::warn("prefix cache: a standby KV copy was refused ({}); the prompt is prefilled", why);
        return std::nullopt;
    }
    spdlog::debug("prefix cache: {} tokens of standby KV taken in {:.1f} ms, imported in {:.1f} ms", found->match,
                  std::chrono::duration<double, std::milli>(t1 - t0).count(),
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count());
    ++stats_.hits;
    ++stats_.standby_hits;
    stats_.reused_tokens += found->match;
    stats_.standby_tokens += found->match;
    return Acquired{*seq, found->match, Source::kStandby};
}

Result<PrefixCache::Acquired> PrefixCache::acquire(std::span<const TokenId> prompt, std::string_view session_key) {
    if (enabled() && prompt.size() > 1) {
        const auto usable = prompt.first(prompt.size() - 1);
        auto [best, best_len] = longest_entry(usable);
        if (config_.standby && !session_key.empty()) {
            if (auto standby =
                    acquire_from_standby(session_key, usable, best_len >= config_.min_match_tokens ? best_len : 0))
                return *standby;
            std::tie(best, best_len) = longest_entry(usable);
        }
        if (config_.disk) {
            if (auto from_disk = acquire_from_disk(usable, best_len >= config_.min_match_tokens ? best_len : 0))
                return *from_disk;
            // It may have evicted entries to make a slot: look for the best one again.
            std::tie(best, best_len) = longest_entry(usable);
        }
        if (best != kNone && best_len >= config_.min_match_tokens) {
            entries_[best].last_used = ++use_counter_;
            for (;;) {
                auto forked = model_.fork_sequence(entries_[best].seq, best_len);
                if (forked) {
                    ++stats_.hits;
                    stats_.reused_tokens += best_len;
                    return Acquired{*forked, best_len, Source::kRam};
                }
                if (forked.error().code != ErrorCode::kResourceExhausted) return forked.error();
                // No free sequence slot: older entries make way for this one.
                const size_t victim = lru_index(best);
                if (victim == kNone) break;
                const bool best_moves = best + 1 == entries_.size();
                evict(victim);
                ++stats_.evictions;
                if (best_moves) best = victim;
            }
            // The only slot left is the entry's own: the request takes the sequence over.
            const SequenceId seq = entries_[best].seq;
            stats_.blocks -= entries_[best].blocks;
            if (best + 1 != entries_.size()) entries_[best] = std::move(entries_.back());
            entries_.pop_back();
            stats_.sequences = entries_.size();
            if (auto st = model_.truncate_sequence(seq, best_len); !st) {
                model_.free_sequence(seq);
                return st.error();
            }
            ++stats_.hits;
            stats_.reused_tokens += best_len;
            return Acquired{seq, best_len, Source::kRam};
        }
    }
    if (enabled()) ++stats_.misses;
    for (;;) {
        auto seq = model_.create_sequence();
        if (seq) return Acquired{*seq, 0};
        if (seq.error().code != ErrorCode::kResourceExhausted || !evict_one()) return seq.error();
    }
}

void PrefixCache::retain(SequenceId seq, std::vector<TokenId> tokens) {
    const size_t blocks = blocks_for(tokens.size());
    if (!enabled() || tokens.empty()) {
        model_.free_sequence(seq);
        return;
    }
    if (blocks > config_.max_blocks) {  // too large for RAM alone: straight to the disk tier, if any
        entries_.push_back(Entry{seq, std::move(tokens), ++use_counter_, blocks});
        stats_.blocks += blocks;
        evict(entries_.size() - 1);
        ++stats_.evictions;
        return;
    }
    for (auto& e : entries_) {
        if (e.tokens.size() >= tokens.size() && common_prefix(tokens, e.tokens) == tokens.size()) {
            e.last_used = ++use_counter_;  // already cached, and more
            model_.free_sequence(seq);
            return;
        }
    }
    for (size_t i = entries_.size(); i-- > 0;)
        if (common_prefix(entries_[i].tokens, tokens) == entries_[i].tokens.size()) evict(i, false);  // superseded
    entries_.push_back(Entry{seq, std::move(tokens), ++use_counter_, blocks});
    stats_.blocks += blocks;
    stats_.sequences = entries_.size();
    while (stats_.blocks > config_.max_blocks) {
        const size_t victim = lru_index(entries_.size() - 1);
        if (victim == kNone) break;
        evict(victim);
        ++stats_.evictions;
    }
}

bool PrefixCache::evict_one() {
    const size_t victim = lru_index(kNone);
    if (victim == kNone) return false;
    evict(victim);
    ++stats_.evictions;
    return true;
}

bool PrefixCache::make_room(size_t blocks) {
    while (model_.free_kv_blocks() < blocks)
        if (!evict_one()) return false;
    return true;
}

void PrefixCache::clear() {
    while (!entries_.empty()) evict(entries_.size() - 1);  // to the disk tier, if there is one
    entries_.clear();
    stats_.blocks = 0;
    stats_.sequences = 0;
}

}  // namespace assistd::serve
