#include "serve/prefix_cache.h"

#include <algorithm>
#include <string>
#include <utility>

namespace assistd::serve {

using engine::SequenceId;
using engine::TokenId;

namespace {
constexpr size_t kNone = static_cast<size_t>(-1);

size_t common_prefix(std::span<const TokenId> a, std::span<const TokenId> b) {
    const size_t n = std::min(a.size(), b.size());
    return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()).first -
                               a.begin());
}
}  // namespace

PrefixCache::PrefixCache(engine::Model& model, const PrefixCacheConfig& config) : model_(model), config_(config) {
    config_.min_match_tokens = std::max<size_t>(1, config_.min_match_tokens);
}

PrefixCache::~PrefixCache() { clear(); }

size_t PrefixCache::blocks_for(size_t tokens) const {
    const size_t bt = std::max<size_t>(1, model_.kv_block_tokens());
    return (tokens + bt - 1) / bt;
}

void PrefixCache::evict(size_t index) {
    Entry& e = entries_[index];
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

Result<PrefixCache::Acquired> PrefixCache::acquire(std::span<const TokenId> prompt) {
    if (enabled() && prompt.size() > 1) {
        size_t best = kNone, best_len = 0;
        const auto usable = prompt.first(prompt.size() - 1);
        for (size_t i = 0; i < entries_.size(); ++i) {
            const size_t len = common_prefix(usable, entries_[i].tokens);
            if (len > best_len) best = i, best_len = len;
        }
        if (best != kNone && best_len >= config_.min_match_tokens) {
            entries_[best].last_used = ++use_counter_;
            for (;;) {
                auto forked = model_.fork_sequence(entries_[best].seq, best_len);
                if (forked) {
                    ++stats_.hits;
                    stats_.reused_tokens += best_len;
                    return Acquired{*forked, best_len};
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
            return Acquired{seq, best_len};
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
    if (!enabled() || tokens.empty() || blocks > config_.max_blocks) {
        model_.free_sequence(seq);
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
        if (common_prefix(entries_[i].tokens, tokens) == entries_[i].tokens.size()) evict(i);  // superseded
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
    for (auto& e : entries_) model_.free_sequence(e.seq);
    entries_.clear();
    stats_.blocks = 0;
    stats_.sequences = 0;
}

}  // namespace assistd::serve
