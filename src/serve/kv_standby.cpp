#include "serve/kv_standby.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>


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

std::string encode_kv_run_header(std::string_view key, uint64_t prefix_hash) {
    std::string out;
    out.reserve(16 + key.size());
    out.append(kRunMagic, 4);
    put_u64(out, prefix_hash);
    put_u32(out, static_cast<uint32_t>(key.size()));
    out.append(key);
    return out;
}

std::string encode_kv_run(std::string_view key, uint64_t prefix_hash, std::string_view blob) {
    std::string out = encode_kv_run_header(key, prefix_hash);
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
        const size_t bytes = blob->size();
        if (!send_(key, prefix, std::move(*blob))) {
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

}  // namespace assistd::serve
