#pragma once
// Sessions over HTTP (our extension to the OpenAI API): the id rules, the
// store the server uses (durable in --state-dir, or the same store in a
// private temporary directory that is removed on shutdown) and the JSON
// shapes of /v1/sessions. No tenants in this slice: every session belongs to
// the tenant "" and every caller sees every session.
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/result.h"
#include "state/session_store.h"

namespace assistd::serve {

inline constexpr size_t kMaxSessionIdLength = 128;

// 1..128 characters of [A-Za-z0-9_-]; the error says what was wrong.
Status validate_session_id(std::string_view id);

// A session title from the first user message: its first line, at most
// `max_bytes` bytes, cut at a UTF-8 character boundary.
std::string session_title(std::string_view first_message, size_t max_bytes = 60);

// The store the server talks to, and the temporary directory it owns (if any).
class ServerSessionStore {
  public:
    // state_dir empty: a fresh temporary directory, deleted by the destructor.
    static Result<std::unique_ptr<ServerSessionStore>> open(const std::string& state_dir,
                                                            Clock& clock);
    ~ServerSessionStore();
    ServerSessionStore(const ServerSessionStore&) = delete;
    ServerSessionStore& operator=(const ServerSessionStore&) = delete;

    state::SessionStore& store() { return *store_; }
    const std::filesystem::path& path() const { return path_; }
    bool temporary() const { return temporary_; }

  private:
    ServerSessionStore() = default;
    std::unique_ptr<state::SessionStore> store_;
    std::filesystem::path path_;
    bool temporary_ = false;
};

}  // namespace assistd::serve
