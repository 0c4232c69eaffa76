#include "serve/kv_disk_tier.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <fstream>

#include "engine/kv_blob.h"
#include "serve/file_bytes.h"
#include "serve/token_prefix.h"

namespace assistd::serve {
namespace fs = std::filesystem;
using engine::TokenId;

KvDiskTier::KvDiskTier(KvDiskTierConfig config, uint64_t fingerprint)
    : config_(std::move(config)), fingerprint_(fingerprint) {}

Result<std::unique_ptr<KvDiskTier>> KvDiskTier::open(const KvDiskTierConfig& config, uint64_t fingerprint) {
    if (config.dir.empty()) return make_error(ErrorCode::kInvalidArgument, "the KV disk tier needs a directory");
    if (config.max_bytes == 0)
        return make_error(ErrorCode::kInvalidArgument, "the KV disk tier needs a byte budget above 0");
    std::error_code ec;
    fs::create_directories(config.dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "cannot create the KV disk directory " + config.dir + ": " + ec.message());
    std::unique_ptr<KvDiskTier> tier(new KvDiskTier(config, fingerprint));
    tier->nonce_ = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}() ^
                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    size_t foreign = 0;
    for (const auto& f : fs::directory_iterator(config.dir, ec)) {
        const std::string path = f.path().string();
        if (f.path().extension() == ".tmp") {
            fs::remove(f.path(), ec);  // a write a crash cut short
            continue;
        }
        if (f.path().extension() != ".akv") continue;
        std::string head;
        auto view = read_file_bytes(path, head, engine::kKvBlobHeaderBytes) ? engine::kv_blob_prefix_bytes(head)
                                                                      : Result<size_t>(make_error(ErrorCode::kIo, ""));
        Result<engine::KvBlobView> parsed = make_error(ErrorCode::kCorrupt, "unreadable");
        if (view.ok() && read_file_bytes(path, head, *view)) parsed = engine::parse_kv_blob_prefix(head);
        if (!parsed.ok() || parsed->first != 0) {
            tier->refused_.fetch_add(1);
            fs::remove(f.path(), ec);
            continue;
        }
        if (parsed->fingerprint != fingerprint) {
            ++foreign;
            continue;
        }
        const uint64_t bytes = f.file_size(ec);
        tier->entries_.push_back(Entry{std::move(parsed->tokens), path, bytes, 0, nullptr});
        tier->bytes_ += bytes;
    }
    if (foreign > 0)
        spdlog::info("kv disk tier: {} files in {} belong to another model or KV type: not used", foreign, config.dir);
    {
        std::lock_guard lk(tier->mu_);
        tier->enforce_budget();
    }
    tier->writer_ = std::thread([t = tier.get()] { t->writer_loop(); });
    return tier;
}

KvDiskTier::~KvDiskTier() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
}

void KvDiskTier::put(std::vector<TokenId> tokens, std::string blob) {
    if (tokens.size() < config_.min_match_tokens || blob.size() > config_.max_bytes) return;
    std::lock_guard lk(mu_);
    for (size_t i = entries_.size(); i-- > 0;)
        if (common_prefix(entries_[i].tokens, tokens) == entries_[i].tokens.size()) remove_entry(i);  // superseded
    auto bytes = std::make_shared<std::string>(std::move(blob));
    // A name of this life of the tier (nonce) and this entry (serial): never one a file of an earlier life has.
    const std::string path =
        (fs::path(config_.dir) / fmt::format("{:016x}-{:016x}-{}.akv", fingerprint_, nonce_, ++serial_)).string();
    entries_.push_back(Entry{std::move(tokens), path, bytes->size(), ++use_counter_, bytes});
    bytes_ += bytes->size();
    queue_.emplace_back(path, bytes);
    enforce_budget();
    cv_.notify_all();  // the writer and flush() wait on it
}

std::optional<KvDiskTier::Found> KvDiskTier::take_longest(std::span<const TokenId> usable, size_t better_than) {
    Entry taken;
    size_t match = 0;
    {
        std::lock_guard lk(mu_);
        size_t best = entries_.size();
        for (size_t i = 0; i < entries_.size(); ++i) {
            const size_t len = common_prefix(usable, entries_[i].tokens);
            if (len > match) best = i, match = len;
        }
        if (best == entries_.size() || match < config_.min_match_tokens || match <= better_than) return std::nullopt;
        taken = std::move(entries_[best]);
        bytes_ -= taken.bytes;
        if (best + 1 != entries_.size()) entries_[best] = std::move(entries_.back());
        entries_.pop_back();
    }
    Found found;
    found.match = match;
    if (taken.pending) {
        found.blob = *taken.pending;  // still queued: the writer skips files no entry names
    } else if (!read_file_bytes(taken.path, found.blob)) {
        refused_.fetch_add(1);
        spdlog::warn("kv disk tier: cannot read {}: the prompt is prefilled instead", taken.path);
        return std::nullopt;
    }
    std::error_code ec;
    fs::remove(taken.path, ec);  // the caller holds it now; RAM keeps it until it leaves again
    hits_.fetch_add(1);
    return found;
}

void KvDiskTier::remove_entry(size_t index) {
    std::error_code ec;
    if (!entries_[index].pending) fs::remove(entries_[index].path, ec);
    bytes_ -= entries_[index].bytes;
    if (index + 1 != entries_.size()) entries_[index] = std::move(entries_.back());
    entries_.pop_back();
}

void KvDiskTier::enforce_budget() {
    while (bytes_ > config_.max_bytes && !entries_.empty()) {
        size_t victim = 0;
        for (size_t i = 1; i < entries_.size(); ++i)
            if (entries_[i].last_used < entries_[victim].last_used) victim = i;
        remove_entry(victim);
        evictions_.fetch_add(1);
    }
}

void KvDiskTier::writer_loop() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued is written
        auto [path, blob] = std::move(queue_.front());
        queue_.pop_front();
        // Written only if an entry still names it (taken or superseded ones are not).
        auto named = [&] {
            return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.path == path; });
        };
        if (!named()) {
            cv_.notify_all();  // flush() may be waiting for this last item
            continue;
        }
        ++writing_;
        lk.unlock();
        const std::string tmp = path + ".tmp";
        bool ok = false;
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            ok = out && out.write(blob->data(), static_cast<std::streamsize>(blob->size())) && out.flush();
        }
        std::error_code ec;
        lk.lock();
        --writing_;
        if (ok && named()) {
            fs::rename(tmp, path, ec);
            ok = !ec;
        } else {
            fs::remove(tmp, ec);
        }
        for (auto& e : entries_)
            if (e.path == path) {
                if (ok) {
                    e.pending.reset();
                    writes_.fetch_add(1);
                } else {
                    spdlog::warn("kv disk tier: cannot write {}: kept in memory until it is used or evicted", path);
                }
            }
        cv_.notify_all();
    }
}

void KvDiskTier::flush() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return queue_.empty() && writing_ == 0; });
}

KvDiskTierStats KvDiskTier::stats() const {
    KvDiskTierStats s;
    s.hits = hits_.load();
    s.writes = writes_.load();
    s.refused = refused_.load();
    s.evictions = evictions_.load();
    std::lock_guard lk(mu_);
    s.entries = entries_.size();
    s.bytes = bytes_;
    return s;
}

}  // namespace assistd::serve
