#include "serve/kv_standby_store.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "common/little_endian.h"
#include "engine/kv_blob.h"
#include "serve/kv_standby.h"
#include "serve/file_bytes.h"
#include "serve/token_prefix.h"

namespace assistd::serve {

namespace fs = std::filesystem;
using engine::TokenId;

namespace {

constexpr size_t kRunHeaderBytes = 16;  // magic, prefix hash, key length (kv_standby.cpp)

// A run file mapped read-only with its pages populated at once: a run read
// back is neither copied nor faulted in page by page.
class MappedFile {
public:
    static std::shared_ptr<MappedFile> open(const std::string& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return nullptr;
        struct stat st {};
        void* p = MAP_FAILED;
        if (::fstat(fd, &st) == 0 && st.st_size > 0)
            p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) return nullptr;
        auto f = std::make_shared<MappedFile>();
        f->data_ = p;
        f->size_ = static_cast<size_t>(st.st_size);
        return f;
    }
    ~MappedFile() {
        if (data_) ::munmap(data_, size_);
    }
    std::string_view bytes() const { return {static_cast<const char*>(data_), size_}; }

private:
    void* data_ = nullptr;
    size_t size_ = 0;
};


// The key, prefix hash, first position and token ids of a run file, from its
// first bytes (not its rows or checksum).
struct RunIndex {
    std::string key;
    uint64_t prefix_hash = 0;
    engine::KvBlobView blob;
};
Result<RunIndex> index_run_file(const std::string& path) {
    auto bad = [&](const std::string& why) { return make_error(ErrorCode::kCorrupt, path + ": " + why); };
    std::string head;
    if (!read_file_bytes(path, head, kRunHeaderBytes + 4096 + engine::kKvBlobHeaderBytes)) return bad("unreadable");
    if (head.size() < kRunHeaderBytes) return bad("too short");
    // decode_kv_run wants the whole run; its header says where the blob starts.
    const size_t key_len = get_le32(head.data() + 12);
    if (head.size() < kRunHeaderBytes + key_len + engine::kKvBlobHeaderBytes) return bad("cut off");
    auto run = decode_kv_run(std::string_view(head).substr(0, kRunHeaderBytes + key_len + 1));
    if (!run) return bad(run.error().message);
    const size_t blob_at = kRunHeaderBytes + key_len;
    auto prefix = engine::kv_blob_prefix_bytes(std::string_view(head).substr(blob_at));
    if (!prefix) return bad(prefix.error().message);
    if (!read_file_bytes(path, head, blob_at + *prefix)) return bad("unreadable");
    auto view = engine::parse_kv_blob_prefix(std::string_view(head).substr(blob_at));
    if (!view) return bad(view.error().message);
    RunIndex out;
    out.key = std::string(run->key);
    out.prefix_hash = run->prefix_hash;
    out.blob = std::move(*view);
    return out;
}

}  // namespace

KvStandbyStore::KvStandbyStore(KvStandbyStoreConfig config, uint64_t fingerprint)
    : config_(std::move(config)), fingerprint_(fingerprint) {
    config_.min_match_tokens = std::max<size_t>(1, config_.min_match_tokens);
    if (on_disk()) writer_ = std::thread([this] { writer_loop(); });
}

Result<std::unique_ptr<KvStandbyStore>> KvStandbyStore::open(const KvStandbyStoreConfig& config,
                                                             uint64_t fingerprint) {
    if (config.dir.empty()) return std::make_unique<KvStandbyStore>(config, fingerprint);
    std::error_code ec;
    fs::create_directories(config.dir, ec);
    if (ec)
        return make_error(ErrorCode::kIo, "cannot create the standby KV directory " + config.dir + ": " + ec.message());
    auto store = std::make_unique<KvStandbyStore>(config, fingerprint);
    // File names sort in the order runs were taken in: a base above every earlier life's, then a serial.
    store->name_base_ = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::vector<std::string> files;
    for (const auto& f : fs::directory_iterator(config.dir, ec)) {
        if (f.path().extension() == ".tmp") {
            fs::remove(f.path(), ec);  // a write a crash cut short
            continue;
        }
        if (f.path().extension() == ".kvr") files.push_back(f.path().string());
    }
    std::sort(files.begin(), files.end());
    size_t foreign = 0;
    std::lock_guard lk(store->mu_);
    for (const auto& path : files) {
        auto index = index_run_file(path);
        if (!index) {
            ++store->stats_.refused;
            spdlog::warn("standby KV: {}; removed", index.error().message);
            fs::remove(path, ec);
            continue;
        }
        if (index->blob.tokens.empty()) {
            ++store->stats_.refused;
            fs::remove(path, ec);
            continue;
        }
        if (index->blob.fingerprint != fingerprint) {
            ++foreign;
            continue;
        }
        Run run;
        run.first = index->blob.first;
        run.bytes = fs::file_size(path, ec);
        run.path = path;
        run.pending = std::make_shared<Pending>();
        run.pending->written = true;
        store->live_paths_.insert(path);
        if (!store->link(index->key, index->prefix_hash, run.first, index->blob.tokens, std::move(run))) {
            store->live_paths_.erase(path);
            fs::remove(path, ec);  // continues nothing this directory holds
        }
    }
    store->stats_.gaps = 0;  // what a restart dropped is not a lost run
    store->enforce_budget();
    store->stats_.sessions = store->chains_.size();
    if (foreign > 0)
        spdlog::info("standby KV: {} files in {} belong to another model or KV type: not used", foreign, config.dir);
    return store;
}

KvStandbyStore::~KvStandbyStore() {
    {
        std::lock_guard lk(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
}

void KvStandbyStore::drop_run(Run& run) {
    stats_.bytes -= run.bytes;
    if (run.path.empty()) return;
    live_paths_.erase(run.path);
    if (!run.pending || run.pending->written) {
        std::error_code ec;
        fs::remove(run.path, ec);
    } else if (!run.pending->writing) {
        // Queued: the writer skips it; its bytes go now, not when the queue reaches it.
        std::string().swap(run.pending->head);
        std::string().swap(run.pending->blob);
    }
}

bool KvStandbyStore::link(const std::string& key, uint64_t prefix_hash, size_t first,
                          std::span<const TokenId> tokens, Run run) {
    auto [it, fresh] = chains_.try_emplace(key);
    Chain& c = it->second;
    if (first > 0 && (c.tokens.size() < first || token_hash(std::span(c.tokens).first(first)) != prefix_hash)) {
        ++stats_.gaps;
        if (fresh) chains_.erase(it);
        return false;
    }
    // The session's tokens from `first` on are the run's now; a run whose tail
    // was cut this way still weighs its whole blob.
    while (!c.runs.empty() && c.runs.back().first >= first) {
        c.bytes -= c.runs.back().bytes;
        drop_run(c.runs.back());
        c.runs.pop_back();
    }
    c.tokens.resize(first);
    c.tokens.insert(c.tokens.end(), tokens.begin(), tokens.end());
    c.bytes += run.bytes;
    stats_.bytes += run.bytes;
    c.runs.push_back(std::move(run));
    c.last_used = ++use_counter_;
    return true;
}

Status KvStandbyStore::receive(std::string_view payload) {
    auto refuse = [&](std::string why) -> Status {
        std::lock_guard lk(mu_);
        if (stats_.refused++ % 1000 < 5) spdlog::warn("standby KV: a run was refused: {}", why);
        return make_error(ErrorCode::kCorrupt, std::move(why));
    };
    auto run = decode_kv_run(payload);
    if (!run) return refuse(run.error().message);
    auto blob = engine::parse_kv_blob(run->blob);
    if (!blob) return refuse(blob.error().message);
    if (blob->fingerprint != fingerprint_) return refuse("it was computed by another model, KV type or RoPE setting");
    if (blob->tokens.empty()) return refuse("it holds no positions");
    // Copied before the lock: megabytes.
    return take_in(run->key, run->prefix_hash, std::string(payload.substr(0, payload.size() - run->blob.size())),
                   std::string(run->blob), blob->first, blob->tokens, payload.size(), false);
}

Status KvStandbyStore::keep_own(std::string_view key, uint64_t prefix_hash, std::string blob) {
    auto view = engine::parse_kv_blob_prefix(blob);
    if (!view || view->fingerprint != fingerprint_ || view->tokens.empty())
        return make_error(ErrorCode::kInvalidArgument, "not a run of this model's KV");
    std::string head = encode_kv_run_header(key, prefix_hash);
    const size_t bytes = head.size() + blob.size();
    return take_in(key, prefix_hash, std::move(head), std::move(blob), view->first, view->tokens, bytes, true);
}

Status KvStandbyStore::take_in(std::string_view key, uint64_t prefix_hash, std::string head, std::string blob,
                               size_t first, std::span<const TokenId> tokens, size_t payload_bytes, bool own) {
    Run r;
    r.first = first;
    if (on_disk()) {
        r.bytes = payload_bytes;
        r.pending = std::make_shared<Pending>();
        r.pending->head = std::move(head);
        r.pending->blob = std::move(blob);
    } else {
        r.bytes = blob.size();
        r.blob = std::move(blob);
    }
    std::lock_guard lk(mu_);
    if (on_disk())
        r.path = (fs::path(config_.dir) / fmt::format("{:016x}-{:08x}.kvr", name_base_, ++serial_)).string();
    const std::string path = r.path;
    auto pending = r.pending;
    if (!link(std::string(key), prefix_hash, first, tokens, std::move(r)))
        return make_error(ErrorCode::kNotFound, "the run continues a prefix this node does not hold");
    if (!path.empty()) {
        live_paths_.insert(path);
        queue_.emplace_back(path, std::move(pending));
        cv_.notify_all();
    }
    if (own) {
        ++stats_.own_runs;
    } else {
        ++stats_.runs;
        stats_.bytes_in += payload_bytes;
    }
    enforce_budget();
    stats_.sessions = chains_.size();
    return {};
}

void KvStandbyStore::enforce_budget() {
    while (stats_.bytes > config_.max_bytes && !chains_.empty()) {
        auto oldest = chains_.begin();
        for (auto it = chains_.begin(); it != chains_.end(); ++it)
            if (it->second.last_used < oldest->second.last_used) oldest = it;
        for (auto& r : oldest->second.runs) drop_run(r);
        chains_.erase(oldest);
        ++stats_.evictions;
    }
}

std::optional<KvStandbyStore::Found> KvStandbyStore::take(std::string_view key, std::span<const TokenId> usable,
                                                          size_t better_than) {
    Chain c;
    size_t match = 0;
    {
        std::lock_guard lk(mu_);
        auto it = chains_.find(std::string(key));
        if (it == chains_.end()) return std::nullopt;
        match = common_prefix(usable, it->second.tokens);
        if (match < config_.min_match_tokens || match <= better_than) return std::nullopt;
        c = std::move(it->second);
        chains_.erase(it);
        stats_.bytes -= c.bytes;
        stats_.sessions = chains_.size();
        for (auto& r : c.runs)
            if (!r.path.empty()) live_paths_.erase(r.path);  // the writer skips it; its file goes below
    }
    Found found;
    found.match = match;
    bool readable = true;
    for (size_t i = 0; i < c.runs.size(); ++i) {
        Run& r = c.runs[i];
        if (r.first < match && readable) {
            const size_t end = i + 1 < c.runs.size() ? c.runs[i + 1].first : c.tokens.size();
            if (r.path.empty()) {
                auto held = std::make_shared<std::string>(std::move(r.blob));
                found.parts.push_back(Part{*held, end, held});
            } else {
                // Not written yet: the writer leaves the bytes of a run no chain names.
                if (r.pending && !r.pending->written) {
                    auto copy = std::make_shared<std::string>(r.pending->blob);  // the writer may be reading it
                    found.parts.push_back(Part{*copy, end, copy});
                } else {
                    auto file = MappedFile::open(r.path);
                    auto decoded = file ? decode_kv_run(file->bytes())
                                        : Result<KvRunView>(make_error(ErrorCode::kIo, "unreadable"));
                    if (decoded)
                        found.parts.push_back(Part{decoded->blob, end, file});
                    else
                        readable = false;
                }
            }
        }
        if (!r.path.empty()) {
            std::error_code ec;
            fs::remove(r.path, ec);
        }
    }
    if (!readable) {
        count_refused();
        spdlog::warn("standby KV: a run file of a session could not be read; its prompt is prefilled");
        return std::nullopt;
    }
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

void KvStandbyStore::writer_loop() {
    std::unique_lock lk(mu_);
    for (;;) {
        cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued is written
        auto [path, bytes] = std::move(queue_.front());
        queue_.pop_front();
        if (!live_paths_.count(path)) {  // taken, cut or evicted before it was written
            cv_.notify_all();
            continue;
        }
        ++writing_;
        bytes->writing = true;
        lk.unlock();
        const std::string tmp = path + ".tmp";
        bool ok;
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            ok = out && out.write(bytes->head.data(), static_cast<std::streamsize>(bytes->head.size())) &&
                 out.write(bytes->blob.data(), static_cast<std::streamsize>(bytes->blob.size())) && out.flush();
        }
        std::error_code ec;
        lk.lock();
        --writing_;
        bytes->writing = false;
        if (ok && live_paths_.count(path)) {
            fs::rename(tmp, path, ec);
            ok = !ec;
        } else {
            fs::remove(tmp, ec);
        }
        // The chain holding it drops its copy in RAM once the file has it.
        if (ok && live_paths_.count(path)) {
            bytes->written = true;
            std::string().swap(bytes->head);
            std::string().swap(bytes->blob);
            ++stats_.writes;
        } else if (live_paths_.count(path)) {
            spdlog::warn("standby KV: cannot write {}: kept in memory until it is used or evicted", path);
        }
        cv_.notify_all();
    }
}

void KvStandbyStore::flush() {
    if (!on_disk()) return;
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return queue_.empty() && writing_ == 0; });
}

}  // namespace assistd::serve
