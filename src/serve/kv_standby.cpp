#include "serve/kv_standby.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/little_endian.h"

namespace assistd::serve {

using engine::TokenId;

namespace {

constexpr char kRunMagic[4] = {'K', 'V', 'R', '1'};
constexpr size_t kMaxKeyBytes = 4096;

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
    put_le64(out, prefix_hash);
    put_le32(out, static_cast<uint32_t>(key.size()));
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
    v.prefix_hash = get_le64(payload.data() + 4);
    const size_t key_len = get_le32(payload.data() + 12);
    if (key_len == 0 || key_len > kMaxKeyBytes || payload.size() - 16 < key_len)
        return make_error(ErrorCode::kCorrupt, "a KV run's session key is empty, too long or cut off");
    v.key = payload.substr(16, key_len);
    v.blob = payload.substr(16 + key_len);
    return v;
}

// ---- the shipper ----

KvStandbyShipper::KvStandbyShipper(KvStandbyShipperConfig config, std::vector<Send> destinations)
    : config_(config) {
    config_.max_sessions = std::max<size_t>(1, config_.max_sessions);
    run_tokens_ = std::max<size_t>(1, config_.run_tokens);
    if (config_.bytes_per_token > 0)
        run_tokens_ = std::clamp<size_t>(config_.max_run_bytes / config_.bytes_per_token, 1, run_tokens_);
    for (auto& send : destinations) destinations_.push_back(Destination{std::move(send), {}});
}

size_t KvStandbyShipper::shipped(size_t d, std::string_view key, std::span<const TokenId> tokens) const {
    const auto& records = destinations_[d].records;
    auto it = records.find(std::string(key));
    if (it == records.end()) return 0;
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

void KvStandbyShipper::forget_oldest(Destination& d) {
    // Amortized: drop the oldest eighth at once.
    std::vector<std::pair<uint64_t, std::string>> ages;
    ages.reserve(d.records.size());
    for (const auto& [key, r] : d.records) ages.emplace_back(r.last_used, key);
    const size_t drop = std::max<size_t>(1, ages.size() / 8);
    std::nth_element(ages.begin(), ages.begin() + static_cast<std::ptrdiff_t>(drop - 1), ages.end());
    for (size_t i = 0; i < drop; ++i) d.records.erase(ages[i].second);
}

KvStandbyShipper::Record KvStandbyShipper::record_of(std::span<const TokenId> tokens) {
    Record r;
    r.length = tokens.size();
    r.hash = token_hash(tokens);
    uint64_t h = token_hash({});
    for (size_t at = kCheckpoint; at <= tokens.size(); at += kCheckpoint) {
        h = token_hash(tokens.subspan(at - kCheckpoint, kCheckpoint), h);
        r.checkpoints.push_back(h);
    }
    return r;
}

void KvStandbyShipper::remember(Destination& d, const std::string& key, const Record& record) {
    if (d.records.size() >= config_.max_sessions && !d.records.count(key)) forget_oldest(d);
    Record& r = d.records[key] = record;
    r.last_used = ++use_counter_;
}

void KvStandbyShipper::forget(size_t d, std::string_view key) {
    std::lock_guard lk(forget_mu_);
    if (forgets_.size() < 65536) forgets_.emplace_back(d, std::string(key));
}

void KvStandbyShipper::apply_forgets() {
    std::vector<std::pair<size_t, std::string>> forgets;
    {
        std::lock_guard lk(forget_mu_);
        forgets.swap(forgets_);
    }
    for (const auto& [d, key] : forgets)
        if (d < destinations_.size()) destinations_[d].records.erase(key);
}

void KvStandbyShipper::turn_finished(std::string_view key, std::span<const TokenId> tokens,
                                     const Export& export_run) {
    apply_forgets();
    if (key.empty() || tokens.empty() || destinations_.empty()) return;
    const auto started = std::chrono::steady_clock::now();
    // Exported once, from where the destination that lacks most begins; each
    // destination takes the runs from its own starting point's run on.
    std::vector<size_t> from(destinations_.size());
    size_t first = tokens.size();
    for (size_t d = 0; d < destinations_.size(); ++d) first = std::min(first, from[d] = shipped(d, key, tokens));
    if (first >= tokens.size()) return;
    const std::string k(key);
    std::vector<bool> live(destinations_.size(), true);
    for (size_t d = 0; d < destinations_.size(); ++d) live[d] = from[d] < tokens.size();
    uint64_t prefix = token_hash(tokens.first(first));
    for (size_t begin = first; begin < tokens.size(); begin += run_tokens_) {
        if (std::none_of(live.begin(), live.end(), [](bool b) { return b; })) break;
        const size_t end = std::min(tokens.size(), begin + run_tokens_);
        auto blob = export_run(begin, end);
        if (!blob) {
            ++stats_.export_errors;
            spdlog::warn("standby KV: a run could not be exported: {}", blob.error().message);
            for (size_t d = 0; d < destinations_.size(); ++d)
                if (live[d]) destinations_[d].records.erase(k);  // what they hold may have a hole now
            std::fill(live.begin(), live.end(), false);
            break;
        }
        ++stats_.runs;
        stats_.bytes += blob->size();
        stats_.tokens += end - begin;
        for (size_t d = 0; d < destinations_.size(); ++d) {
            if (!live[d] || end <= from[d]) continue;  // this destination holds this run already
            const KvSendResult sent = destinations_[d].send(key, prefix, *blob);
            if (sent == KvSendResult::kSent) continue;
            if (sent == KvSendResult::kDropped) ++stats_.dropped;
            destinations_[d].records.erase(k);  // its copy may have a gap: everything again next turn
            live[d] = false;
        }
        prefix = token_hash(tokens.subspan(begin, end - begin), prefix);
    }
    if (std::any_of(live.begin(), live.end(), [](bool b) { return b; })) {
        const Record record = record_of(tokens);  // the same for every destination that took it all
        for (size_t d = 0; d < destinations_.size(); ++d)
            if (live[d]) remember(destinations_[d], k, record);
    }
    stats_.export_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace assistd::serve
