#include "serve/sessions.h"

#include <sys/random.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>

#include "serve/auth.h"
#include "state/durable_session_store.h"
#include "state/tenant_sessions.h"

namespace assistd::serve {

// The store key of a tenant's session is "<tenant>:<id>" (state/tenant_sessions.h): it must fit.
static_assert(kMaxTenantNameLength + 1 + kMaxSessionIdLength <= state::kMaxSessionKeyLength);

Status validate_session_id(std::string_view id) {
    if (id.empty() || id.size() > kMaxSessionIdLength)
        return make_error(ErrorCode::kInvalidArgument, "a session id must be 1 to " +
                                                           std::to_string(kMaxSessionIdLength) +
                                                           " characters long");
    for (const char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok)
            return make_error(ErrorCode::kInvalidArgument,
                              "a session id may only hold letters, digits, '-' and '_'");
    }
    return {};
}

std::string new_session_id() {
    unsigned char bytes[16];
    size_t got = 0;
    while (got < sizeof bytes) {
        const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
        if (n > 0) got += static_cast<size_t>(n);
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id = "sess_";
    for (unsigned char b : bytes) {
        id += kHex[b >> 4];
        id += kHex[b & 15];
    }
    return id;
}

std::shared_ptr<SessionTurns::Lease> SessionTurns::try_begin(std::string_view id) {
    std::lock_guard lk(mu_);
    if (!busy_.emplace(id).second) return nullptr;
    return std::make_shared<Lease>(*this, std::string(id));
}

void SessionTurns::Lease::release() {
    std::call_once(released_, [this] {
        std::lock_guard lk(turns_.mu_);
        turns_.busy_.erase(id_);
    });
}

std::string session_title(std::string_view first_message, size_t max_bytes) {
    std::string_view line = first_message.substr(0, first_message.find('\n'));
    if (line.size() <= max_bytes) return std::string(line);
    size_t end = max_bytes;
    // Back up over UTF-8 continuation bytes so the cut never splits a character.
    while (end > 0 && (static_cast<unsigned char>(line[end]) & 0xC0) == 0x80) --end;
    return std::string(line.substr(0, end));
}

Result<std::unique_ptr<ServerSessionStore>> ServerSessionStore::open(const std::string& state_dir,
                                                                     Clock& clock) {
    std::unique_ptr<ServerSessionStore> s(new ServerSessionStore());
    if (state_dir.empty()) {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "assistd-sessions-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr)
            return make_error(ErrorCode::kIo,
                              "cannot create a temporary directory for the session store in " +
                                  std::filesystem::temp_directory_path().string() +
                                  "; set TMPDIR or give --state-dir");
        s->path_ = pattern;
        s->temporary_ = true;
    } else {
        std::error_code ec;
        std::filesystem::create_directories(state_dir, ec);
        if (ec)
            return make_error(ErrorCode::kIo,
                              "cannot create --state-dir " + state_dir + ": " + ec.message());
        s->path_ = state_dir;
    }
    state::DurableSessionStoreOptions options;
    options.path = s->path_.string();
    options.replica_id = 1;  // a single server is a single replica; clustering assigns real ids
    auto store = state::DurableSessionStore::open(options, clock);
    if (!store) return store.error();  // the destructor removes a temporary directory
    s->store_ = std::move(*store);
    return s;
}

ServerSessionStore::~ServerSessionStore() {
    store_.reset();  // closes RocksDB before its files go
    if (temporary_) {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
}

}  // namespace assistd::serve
