#pragma once
// Sessions over HTTP (our extension to the OpenAI API): the id rules, the
// store the server uses (durable in --state-dir, or the same store in a
// private temporary directory that is removed on shutdown) and the JSON
// shapes of /v1/sessions. A session is the tenant's that created it: its
// store key holds the tenant (state/tenant_sessions.h), so another tenant's
// id is, to a caller, an id nobody used.
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "common/clock.h"
#include "common/result.h"
#include "state/session_store.h"

namespace assistd::serve {

inline constexpr size_t kMaxSessionIdLength = 128;

// 1..128 characters of [A-Za-z0-9_-]; the error says what was wrong.
Status validate_session_id(std::string_view id);

// A fresh id for POST /v1/sessions: "sess_" and 32 random hex digits (from
// the kernel's random source), so an id created here was never used anywhere.
std::string new_session_id();

// A session title from the first user message: its first line, at most
// `max_bytes` bytes, cut at a UTF-8 character boundary.
std::string session_title(std::string_view first_message, size_t max_bytes = 60);

// One turn at a time per session: a request that finds its session busy
// answering another is refused (409), so the stored conversation is always
// user, assistant, user, ... in the order the turns ran, never interleaved.
class SessionTurns {
  public:
    // Held from reading the history until the answer is stored (or the turn
    // fails or is abandoned); release() or the destructor frees the session.
    class Lease {
      public:
        Lease(SessionTurns& turns, std::string id) : turns_(turns), id_(std::move(id)) {}
        ~Lease() { release(); }
        Lease(const Lease&) = delete;
        Lease& operator=(const Lease&) = delete;
        void release();

      private:
        SessionTurns& turns_;
        std::string id_;
        std::once_flag released_;
    };

    // Null when the session is in a turn already. `key`: the tenant's store
    // key for the id, so one tenant's busy session never holds up another's.
    std::shared_ptr<Lease> try_begin(std::string_view key);

  private:
    std::mutex mu_;
    std::unordered_set<std::string> busy_;
};

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
