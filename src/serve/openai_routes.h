#pragma once
// The OpenAI-compatible API on top of the scheduler: request JSON in,
// response JSON or SSE frames out. No Beast here; the HTTP server calls
// handle() on its I/O threads and it never blocks: generations come back as
// an AsyncBody, and routes that use the session store (whose writes wait for
// an fsync and, in a fleet, for replicas) come back deferred, to run on the
// blocking pool.
//
//   POST /v1/chat/completions   POST /v1/completions   GET /v1/models[/{id}]
//   GET /healthz   GET /readyz   GET /metrics
//   GET /v1/sessions   GET|DELETE /v1/sessions/{id}   (with a session store)
//   GET /v1/sessions/{id}?local=true                  (this node's own copy, no fleet reads)
//   GET /, /app.js, ...                                 (with static files: the chat page)
//
// With API keys configured, every /v1/ route needs "Authorization: Bearer
// <key>"; the key's tenant owns the sessions it creates and only sees those,
// and the key's rate limits and default precision apply. The probes, /metrics
// and the chat page's files stay open.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "common/clock.h"
#include "engine/engine.h"
#include "serve/http_server.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"
#include "serve/sessions.h"
#include "serve/static_files.h"
#include "state/session_store.h"

namespace assistd::knowledge {
class GraphStore;
}

namespace assistd::serve {

struct OpenAiRoutesConfig {
    std::string model_id = "assistd";   // the name /v1/models lists and requests must use
    size_t default_max_tokens = 1024;   // when a request gives none (capped by the context)
    int64_t queue_timeout_ms = 30000;   // a request queued longer is answered 503
    int retry_after_s = 1;
    bool serve_metrics = true;          // false: /metrics is served on its own address, not here
    size_t max_stop_strings = 16;
    uint64_t seed = 0;                  // mixed into the seeds of requests that give none
    size_t max_messages = 256;          // messages in one chat request; 0: no limit
    size_t max_prompt_tokens = 0;       // tokens of a templated prompt; 0: only the context limits it
    // Extra readiness: why this node is not ready yet ("joining": a fleet node
    // that has not met its peers; "warming up": weights still being prepared),
    // "" when it is; /readyz answers 503 with it. Null: ready unless draining.
    // Thread-safe.
    std::function<std::string()> not_ready;
    // A fleet node's own copies (its durable store under the replicated one):
    // GET /v1/sessions/{id}?local=1 (or true) reads here, with no fetch, refresh or
    // quorum read, so a test or an operator sees what this node holds. Null:
    // the session store is local already (one node) and answers it.
    state::SessionStore* local_sessions = nullptr;
    // Runs a finished turn's session writes (the answer, the usage) off the
    // I/O threads; null: on the thread that polls the generation.
    BlockingPool* blocking = nullptr;
    // The knowledge graph chat requests may ask facts of (`knowledge`); null: none.
    knowledge::GraphStore* knowledge = nullptr;
};

class ApiKeyTable;
class BlockingPool;
class RateLimiter;

// API keys and their rate limits (serve/auth.h, serve/rate_limit.h); both
// must outlive the routes. The limiter has its own clock, so tests drive it.
struct ApiAccess {
    const ApiKeyTable* keys = nullptr;  // null or empty: the API is open, every caller is tenant ""
    RateLimiter* limiter = nullptr;     // built over *keys; required with keys
};

class OpenAiRoutes {
public:
    // model: for its tokenizer, chat template and context (const use only;
    // the scheduler is its only decode() caller). sessions: null turns
    // `session_id` and /v1/sessions off; web: null serves no chat page.
    // Both must outlive the routes.
    OpenAiRoutes(const engine::Model& model, Scheduler& scheduler, ServeMetrics& metrics, Clock& clock,
                 const OpenAiRoutesConfig& config, state::SessionStore* sessions = nullptr,
                 const StaticFiles* web = nullptr, ApiAccess access = {});

    HttpResponse handle(const HttpRequest& request);
    // handle() without deferring: what a deferred response runs.
    HttpResponse respond(const HttpRequest& request);

    // Draining: /readyz answers 503 and new generations get 503.
    void set_draining(bool draining) { draining_.store(draining); }
    bool draining() const { return draining_.load(); }

private:
    // Who is asking: the tenant, and the key (none on an open server).
    struct Caller {
        std::string tenant;
        std::optional<size_t> key;
    };
    HttpResponse completions(const HttpRequest& request, bool chat, const Caller& caller);
    HttpResponse models(std::string_view id);
    HttpResponse sessions(const HttpRequest& request, std::string_view id, bool list, const Caller& caller);
    // POST /v1/sessions: a new session under a fresh id (explicit creation).
    HttpResponse create_session(const HttpRequest& request, const Caller& caller);

    const engine::Model& model_;
    Scheduler& scheduler_;
    ServeMetrics& metrics_;
    Clock& clock_;
    OpenAiRoutesConfig config_;
    state::SessionStore* sessions_;
    const StaticFiles* web_;
    const ApiKeyTable* keys_;  // null: open
    RateLimiter* limiter_;     // set with keys_
    SessionTurns session_turns_;  // one turn at a time per session (409 otherwise)
    std::atomic<bool> draining_{false};
    std::atomic<uint64_t> request_counter_{0};
};

}  // namespace assistd::serve
