#include "serve/kv_standby.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "engine/kv_blob.h"
#include "serve/token_prefix.h"

namespace assistd::serve {

using engine::TokenId;

namespace {

constexpr char kRunMagic[4] = {'K', 'V', 'R', '1'};
constexpr size_t kMaxKeyBytes = 4096;

void put_u64(std::string& out, uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint64_t get_le(std::string_view s, size_t at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    return v;
}

}  // namespace

uint64_t token_hash(std::span<const TokenId> tokens, uint64_t seed) {
    uint64_t h = seed;
    for (TokenId t : tokens) {
        h ^= static_cast<uint32_t>(t);
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

std::string encode_kv_run(std::string_view key, uint64_t prefix_hash, std::string_view blob) {
    std::string out;
    out.reserve(20 + key.size() + blob.size());
    out.append(kRunMagic, 4);
    put_u64(out, prefix_hash);
    put_u32(out, static_cast<uint32_t>(key.size()));
    out.append(key);
    out.append(blob);
    return out;
}

Result<KvRunView> decode_kv_run(std::string_view payload) {
    if (payload.size() < 16 || std::memcmp(payload.data(), kRunMagic, 4) != 0)
        return make_error(ErrorCode::kCorrupt, "not a KV run (bad magic or too short)");
    KvRunView v;
    v.prefix_hash = get_le(payload, 4, 8);
    const size_t key_len = get_le(payload, 12, 4);
    if (key_len == 0 || key_len > kMaxKeyBytes || payload.size() - 16 < key_len)
        return make_error(ErrorCode::kCorrupt, "a KV run's session key is empty, too long or cut off");
    v.key = payload.substr(16, key_len);
    v.blob = payload.substr(16 + key_len);
    return v;
}

// ---- the shipper ----

KvStandbyShipper::KvStandbyShipper(KvStandbyShipperConfig config, Send send)
    : config_(config), send_(std::move(send)) {
    config_.run_tokens = std::max<size_t>(1, config_.run_tokens);
    config_.max_sessions = std::max<size_t>(1, config_.max_sessions);
}

size_t KvStandbyShipper::shipped(std::string_view key, std::span<const TokenId> tokens) const {
    auto it = records_.find(std::string(key));
    if (it == records_.end()) return 0;
    const Record& r = it->second;
    if (r.length <= tokens.size() && token_hash(tokens.first(r.length)) == r.hash) return r.length;
    // Where the two part: the last checkpoint both agree on.
    size_t agreed = 0;
    uint64_t h = token_hash({});
    for (size_t i = 0; i < r.checkpoints.size() && (i + 1) * kCheckpoint <= tokens.size(); ++i) {
        h = token_hash(tokens.subspan(i * kCheckpoint, kCheckpoint), h);
        if (h != r.checkpoints[i]) break;
        agreed = (i + 1) * kCheckpoint;
    }
    return agreed;
}

void KvStandbyShipper::forget_oldest() {
    // Amortized: drop the oldest eighth at once.
    std::vector<std::pair<uint64_t, std::string>> ages;
    ages.reserve(records_.size());
    for (const auto& [key, r] : records_) ages.emplace_back(r.last_used, key);
    const size_t drop = std::max<size_t>(1, ages.size() / 8);
    std::nth_element(ages.begin(), ages.begin() + static_cast<std::ptrdiff_t>(drop - 1), ages.end());
    for (size_t i = 0; i < drop; ++i) records_.erase(ages[i].second);
}

void KvStandbyShipper::turn_finished(std::string_view key, std::span<const TokenId> tokens,
                                     const Export& export_run) {
    if (key.empty() || tokens.empty()) return;
    const auto started = std::chrono::steady_clock::now();
    const size_t first = shipped(key, tokens);
    if (first >= tokens.size()) return;
    bool ok = true;
    uint64_t prefix = token_hash(tokens.first(first));
    for (size_t begin = first; begin < tokens.size() && ok; begin += config_.run_tokens) {
        const size_t end = std::min(tokens.size(), begin + config_.run_tokens);
        auto blob = export_run(begin, end);
        if (!blob) {
            ++stats_.export_errors;
            spdlog::warn("standby KV: a run could not be exported: {}", blob.error().message);
            ok = false;
            break;
        }
        std::string payload = encode_kv_run(key, prefix, *blob);
        const size_t bytes = payload.size();
        if (!send_(key, std::move(payload))) {
            ++stats_.dropped;
            ok = false;
            break;
        }
        ++stats_.runs;
        stats_.bytes += bytes;
        stats_.tokens += end - begin;
        prefix = token_hash(tokens.subspan(begin, end - begin), prefix);
    }
    stats_.export_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::string k(key);
    if (!ok) {
        records_.erase(k);  // the copies may have a gap now: the next turn sends everything
        return;
    }
    if (records_.size() >= config_.max_sessions && !records_.count(k)) forget_oldest();
    Record& r = records_[k];
    r.length = tokens.size();
    r.hash = token_hash(tokens);
    r.checkpoints.clear();
    uint64_t h = token_hash({});
    for (size_t at = kCheckpoint; at <= tokens.size(); at += kCheckpoint) {
        h = token_hash(tokens.subspan(at - kCheckpoint, kCheckpoint), h);
        r.checkpoints.push_back(h);
    }
    r.last_used = ++use_counter_;
}

// ---- the store ----

KvStandbyStore::KvStandbyStore(KvStandbyStoreConfig config, uint64_t fingerprint)
    : config_(config), fingerprint_(fingerprint) {
    config_.min_match_tokens = std::max<size_t>(1, config_.min_match_tokens);
}

Status KvStandbyStore::receive(std::string_view payload) {
    auto refuse = [&](std::string why) -> Status {
        std::lock_guard lk(mu_);
        if (stats_.refused++ % 1000 < 5) spdlog::warn("standby KV: a run from a peer was refused: {}", why);
        return make_error(ErrorCode::kCorrupt, std::move(why));
    };
    auto run = decode_kv_run(payload);
    if (!run) return refuse(run.error().message);
    auto blob = engine::parse_kv_blob(run->blob);
    if (!blob) return refuse(blob.error().message);
    if (blob->fingerprint != fingerprint_)
        return refuse("it was computed by another model, KV type or RoPE setting");
    if (blob->tokens.empty()) return refuse("it holds no positions");

    std::lock_guard lk(mu_);
    auto [it, fresh] = chains_.try_emplace(std::string(run->key));
    Chain& c = it->second;
    const size_t first = blob->first;
    if (first > 0 && (c.tokens.size() < first || token_hash(std::span(c.tokens).first(first)) != run->prefix_hash)) {
        // It continues a prefix this node does not hold (a run was lost on the
        // way, or this node started after it was sent): the chain stays as it
        // is, shorter; the sender starts over after a loss it saw.
        ++stats_.gaps;
        if (fresh) chains_.erase(it);
        return make_error(ErrorCode::kNotFound, "the run continues a prefix this node does not hold");
    }
    // The session's tokens from `first` on are the run's now. A run whose
    // tail was cut this way still weighs its whole blob.
    stats_.bytes -= c.bytes;
    while (!c.runs.empty() && c.runs.back().first >= first) {
        c.bytes -= c.runs.back().blob.size();
        c.runs.pop_back();
    }
    c.tokens.resize(first);
    c.tokens.insert(c.tokens.end(), blob->tokens.begin(), blob->tokens.end());
    c.runs.push_back(Run{first, std::string(run->blob)});
    c.bytes += run->blob.size();
    stats_.bytes += c.bytes;
    c.last_used = ++use_counter_;
    ++stats_.runs;
    stats_.bytes_in += payload.size();
    enforce_budget();
    stats_.sessions = chains_.size();
    return {};
}

void KvStandbyStore::enforce_budget() {
    while (stats_.bytes > config_.max_bytes && !chains_.empty()) {
        auto oldest = chains_.begin();
        for (auto it = chains_.begin(); it != chains_.end(); ++it)
            if (it->second.last_used < oldest->second.last_used) oldest = it;
        stats_.bytes -= oldest->second.bytes;
        chains_.erase(oldest);
        ++stats_.evictions;
    }
}

std::optional<KvStandbyStore::Found> KvStandbyStore::take(std::string_view key, std::span<const TokenId> usable,
                                                          size_t better_than) {
    std::lock_guard lk(mu_);
    auto it = chains_.find(std::string(key));
    if (it == chains_.end()) return std::nullopt;
    Chain& c = it->second;
    const size_t match = common_prefix(usable, c.tokens);
    if (match < config_.min_match_tokens || match <= better_than) return std::nullopt;
    Found found;
    found.match = match;
    for (size_t i = 0; i < c.runs.size() && c.runs[i].first < match; ++i) {
        const size_t end = i + 1 < c.runs.size() ? c.runs[i + 1].first : c.tokens.size();
        found.parts.push_back(Part{std::move(c.runs[i].blob), end});
    }
    stats_.bytes -= c.bytes;
    chains_.erase(it);
    stats_.sessions = chains_.size();
    return found;
}

void KvStandbyStore::count_refused() {
    std::lock_guard lk(mu_);
    ++stats_.refused;
}

KvStandbyStoreStats KvStandbyStore::stats() const {
    std::lock_guard lk(mu_);
    return stats_;
}

}  // namespace assistd::serve
