#include "serve/openai_routes.h"

#include "serve/blocking_pool.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string_view>

#include "serve/auth.h"
#include "serve/blocking_pool.h"
#include "serve/knowledge_context.h"
#include "serve/rate_limit.h"
#include "serve/sessions.h"
#include "state/tenant_sessions.h"

namespace assistd::serve {

using nlohmann::json;

namespace {

struct ApiError {
    int status = 400;
    std::string message;
    std::string type = "invalid_request_error";
    std::string param;  // empty: null
    std::string code;   // empty: null
};

std::string error_json(const ApiError& e) {
    json j = {{"error",
               {{"message", e.message},
                {"type", e.type},
                {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse error_response(const ApiError& e, int retry_after_s = 0) {
    HttpResponse r;
    r.status = e.status;
    r.body = error_json(e);
    if (retry_after_s > 0) r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
    return r;
}

HttpResponse json_response(int status, const json& j) {
    HttpResponse r;
    r.status = status;
    r.body = j.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

const char* openai_finish_reason(FinishReason r) { return r == FinishReason::kLength ? "length" : "stop"; }

// What a finished-without-output generation answers.
ApiError failure_error(const GenerationUpdate& u) {
    if (u.reason == FinishReason::kDeadlineExpired)
        return {503, "the server is overloaded: the request waited in the queue past its deadline; retry later",
                "server_error", "", "queue_timeout"};
    if (u.reason == FinishReason::kCancelled)
        return {503, "the server is shutting down; retry later", "server_error", "", "server_shutting_down"};
    if (u.error.code == ErrorCode::kResourceExhausted)
        return {503, u.error.message, "server_error", "", "resources_exhausted"};
    if (u.error.code == ErrorCode::kOutOfRange)
        return {400, u.error.message, "invalid_request_error", "messages", "context_length_exceeded"};
    return {500, u.error.message.empty() ? "generation failed" : u.error.message, "server_error", "", ""};
}

// Called once when a generation's response ends: its status and the completion tokens it produced.
using OnCompletionDone = std::function<void(int status, size_t completion_tokens)>;

// A generation as an HTTP body: one JSON object, or SSE frames.
class CompletionBody final : public AsyncBody, public std::enable_shared_from_this<CompletionBody> {
public:
    CompletionBody(std::shared_ptr<GenerationChannel> channel, bool chat, bool stream, bool include_usage,
                   std::string id, std::string model, int64_t created, ServeMetrics& metrics, std::string route,
                   int retry_after_s, state::SessionStore* sessions = nullptr, std::string session_key = {},
                   std::string session_id = {}, OnCompletionDone on_done = nullptr,
                   std::shared_ptr<SessionTurns::Lease> turn = nullptr, BlockingPool* blocking = nullptr)
        : channel_(std::move(channel)),
          chat_(chat),
          stream_(stream),
          include_usage_(include_usage),
          id_(std::move(id)),
          model_(std::move(model)),
          created_(created),
          metrics_(metrics),
          route_(std::move(route)),
          retry_after_s_(retry_after_s),
          sessions_(sessions),
          session_key_(std::move(session_key)),
          session_id_(std::move(session_id)),
          on_done_(std::move(on_done)),
          turn_(std::move(turn)),
          blocking_(blocking) {
        if (sessions_) headers_.emplace_back("X-Session-Id", session_id_);
    }

    void set_waker(std::function<void()> wake) override {
        {
            std::lock_guard lk(wake_mu_);
            wake_ = wake;
        }
        channel_->set_waker(std::move(wake));
    }
    void clear_waker() override {
        {
            std::lock_guard lk(wake_mu_);
            wake_ = nullptr;
        }
        channel_->clear_waker();
    }
    int status() const override { return status_; }
    HttpHeaders headers() const override { return headers_; }
    void cancel() override {
        channel_->cancel();
        // An abandoned turn stores no answer: the session is free again (once an answer
        // already being stored is in, so the next turn comes after it).
        if (turn_ && !recording_.load()) turn_->release();
        if (!counted_.exchange(true)) {
            metrics_.count_request(route_, 499);  // the client closed the request
            if (on_done_) on_done_(499, completion_seen_.load());
        }
    }

    bool poll(std::string& out) override {
        if (done_) return true;
        update_.text.clear();
        update_.tokens.clear();
        update_.piece_ends.clear();
        if (recording_) {
            // The generation ended; its answer is being stored on the blocking pool.
            if (!recorded_.load(std::memory_order_acquire)) return false;
            return stream_ ? end_stream(out) : end_object(out);
        }
        const bool finished = channel_->take(update_);
        completion_seen_.store(update_.completion_tokens);
        text_ += update_.text;
        if (!stream_) {
            if (!finished) return false;
            if (update_.reason == FinishReason::kStop || update_.reason == FinishReason::kLength) {
                if (defer_record()) return false;
                return end_object(out);
            }
            fail(out, failure_error(update_));
            return finish();
        }
        const bool failed = finished && update_.reason != FinishReason::kStop && update_.reason != FinishReason::kLength;
        if (!started_) {
            if (failed) {
                fail(out, failure_error(update_));
                return finish();
            }
            if (update_.tokens.empty() && update_.text.empty() && !finished) return false;
            started_ = true;
            if (chat_) frame(out, chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
        }
        // One chunk per token's text, as OpenAI streams, even when several tokens arrived at once.
        size_t begin = 0;
        for (size_t end : update_.piece_ends) {
            const std::string_view piece = std::string_view(update_.text).substr(begin, end - begin);
            begin = end;
            if (chat_)
                frame(out, chunk({{"content", piece}}, nullptr));
            else
                frame(out, chunk(piece, nullptr));
        }
        if (!finished) return false;
        if (failed) {
            const ApiError e = failure_error(update_);
            out += "data: " + error_json(e) + "\n\n";
            out += "data: [DONE]\n\n";
            return finish();
        }
        if (defer_record()) return false;
        return end_stream(out);
    }

private:
    // Stores the answer on the blocking pool, when there is one and a session: true when
    // started (poll() answers again once it is done).
    bool defer_record() {
        if (!sessions_ || !blocking_) {
            record_status_ = record_answer();
            return false;
        }
        recording_ = true;
        auto self = shared_from_this();
        const bool posted = blocking_->post([self] {
            self->record_status_ = self->record_answer();
            self->recorded_.store(true, std::memory_order_release);
            if (self->turn_) self->turn_->release();  // stored: the next turn may start
            // Under the lock: once clear_waker() returned, no wake may come (it only posts).
            std::lock_guard lk(self->wake_mu_);
            if (self->wake_) self->wake_();
        });
        if (!posted) {  // shutting down: the answer is not stored; poll() answers now
            recording_ = false;
            record_status_ = make_error(ErrorCode::kResourceExhausted, "the server is shutting down");
            return false;
        }
        return true;
    }

    bool end_object(std::string& out) {
        if (!record_status_.ok())
            fail(out, {500, record_status_.error().message, "server_error", "session_id", "session_store_error"});
        else
            out += dump(final_object());
        return finish();
    }

    bool end_stream(std::string& out) {
        if (!record_status_.ok()) {
            out += "data: " +
                   error_json({500, record_status_.error().message, "server_error", "session_id",
                               "session_store_error"}) +
                   "\n\n";
        } else {
            frame(out, chunk(chat_ ? json::object() : json(""), openai_finish_reason(update_.reason)));
            if (include_usage_) {
                json u = base("chunk");
                u["choices"] = json::array();
                u["usage"] = usage();
                frame(out, u);
            }
        }
        out += "data: [DONE]\n\n";
        return finish();
    }

    // A session's turn ends with the assistant's answer in the store.
    Status record_answer() {
        if (!sessions_) return {};
        auto appended = sessions_->append_message(session_key_, {"assistant", text_});
        if (!appended.ok())
            return make_error(appended.error().code,
                              "the answer could not be saved to session '" + session_id_ + "': " +
                                  appended.error().message);
        return sessions_->add_usage(session_key_, static_cast<int64_t>(update_.prompt_tokens),
                                    static_cast<int64_t>(update_.completion_tokens));
    }

    bool finish() {
        done_ = true;
        if (turn_) turn_->release();  // the answer is stored (or the turn failed): the next turn may start
        if (!counted_.exchange(true)) {
            metrics_.count_request(route_, status_);
            if (on_done_) on_done_(status_, update_.completion_tokens);
        }
        return true;
    }

    void fail(std::string& out, const ApiError& e) {
        status_ = e.status;
        if (e.status == 503 || e.status == 429) headers_.emplace_back("Retry-After", std::to_string(retry_after_s_));
        out += error_json(e);
    }

    json base(const char* kind) const {
        std::string object = chat_ ? "chat.completion" : "text_completion";
        if (std::string_view(kind) == "chunk" && chat_) object += ".chunk";
        return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
    }

    json usage() const {
        return {{"prompt_tokens", update_.prompt_tokens},
                {"completion_tokens", update_.completion_tokens},
                {"total_tokens", update_.prompt_tokens + update_.completion_tokens},
                {"prompt_tokens_details", {{"cached_tokens", update_.cached_tokens}}}};
    }

    // delta: the chat delta object, or the completion's text.
    json chunk(json delta, const char* finish_reason) const {
        json c = base("chunk");
        json choice = {{"index", 0},
                       {"finish_reason", finish_reason ? json(finish_reason) : json(nullptr)},
                       {"logprobs", nullptr}};
        choice[chat_ ? "delta" : "text"] = std::move(delta);
        c["choices"] = json::array({std::move(choice)});
        if (include_usage_) c["usage"] = nullptr;
        return c;
    }

    static void frame(std::string& out, const json& j) {
        out += "data: ";
        out += dump(j);
        out += "\n\n";
    }

    json final_object() const {
        json j = base("");
        json choice = {{"index", 0}, {"finish_reason", openai_finish_reason(update_.reason)}, {"logprobs", nullptr}};
        if (chat_)
            choice["message"] = {{"role", "assistant"}, {"content", text_}, {"refusal", nullptr}};
        else
            choice["text"] = text_;
        j["choices"] = json::array({std::move(choice)});
        j["usage"] = usage();
        if (sessions_) j["session_id"] = session_id_;
        for (const auto& [k, v] : extra_.items()) j[k] = v;
        return j;
    }

public:
    // A field of the whole (non-streamed) response beside the standard ones.
    void set_extra(const std::string& key, json value) { extra_[key] = std::move(value); }

private:

    std::shared_ptr<GenerationChannel> channel_;
    bool chat_, stream_, include_usage_;
    std::mutex wake_mu_;
    std::function<void()> wake_;          // the server's waker, for the pool's "stored"
    std::atomic<bool> recording_{false};  // the answer went to the blocking pool
    std::atomic<bool> recorded_{false};   // ... and is stored (or failed): record_status_
    Status record_status_;
    std::string id_, model_;
    int64_t created_;
    ServeMetrics& metrics_;
    std::string route_;
    int retry_after_s_;
    GenerationUpdate update_;
    std::string text_;
    json extra_ = json::object();
    int status_ = 200;
    HttpHeaders headers_;
    bool started_ = false, done_ = false;
    std::atomic<bool> counted_{false};  // cancel() may come from the stopping server's thread
    std::atomic<size_t> completion_seen_{0};  // for cancel(), which may run on another thread
    state::SessionStore* sessions_;     // set: the answer is appended to session_key_ when it completes
    std::string session_key_;           // where the session is stored
    std::string session_id_;            // what the client calls it
    OnCompletionDone on_done_;
    std::shared_ptr<SessionTurns::Lease> turn_;  // the session's turn, held until the answer is stored
    BlockingPool* blocking_ = nullptr;
};

json session_json(const state::Session& session) {
    json messages = json::array();
    for (const auto& m : session.messages)
        messages.push_back(
            {{"id", m.id}, {"role", m.role}, {"content", m.content}, {"created_at", m.created_at_ms / 1000}});
    return {{"id", session.id},
            {"object", "session"},
            {"created_at", session.created_at_ms / 1000},
            {"title", session.title},
            {"messages", std::move(messages)},
            {"usage",
             {{"prompt_tokens", session.prompt_tokens},
              {"completion_tokens", session.completion_tokens},
              {"total_tokens", session.prompt_tokens + session.completion_tokens}}}};
}

ApiError session_store_error(const Error& e) {
    if (e.code == ErrorCode::kNotFound) return {404, e.message, "invalid_request_error", "session_id", "session_not_found"};
    if (e.code == ErrorCode::kInvalidArgument)
        return {400, e.message, "invalid_request_error", "session_id", "invalid_session_id"};
    if (e.code == ErrorCode::kResourceExhausted)  // a fleet's replicas did not answer in time
        return {503, e.message + "; retry later", "server_error", "session_id", "replicas_unavailable"};
    return {500, "the session store failed: " + e.message, "server_error", "", "session_store_error"};
}

HttpResponse store_error_response(const Error& e, int retry_after_s) {
    const ApiError api = session_store_error(e);
    return error_response(api, api.status == 503 ? retry_after_s : 0);
}

// Gives an admitted request's reserved tokens back when it ends before generating.
struct ReservationGuard {
    RateLimiter* limiter = nullptr;
    size_t key = 0;
    size_t reserved = 0;
    ReservationGuard() = default;
    ReservationGuard(RateLimiter* l, size_t k, size_t r) : limiter(l), key(k), reserved(r) {}
    ReservationGuard(const ReservationGuard&) = delete;
    ReservationGuard& operator=(ReservationGuard&& o) noexcept {
        std::swap(limiter, o.limiter);
        key = o.key;
        reserved = o.reserved;
        return *this;
    }
    ~ReservationGuard() {
        if (limiter) limiter->settle(key, reserved, 0);
    }
    void release() { limiter = nullptr; }
};

// Reads an optional number field; sets err on a wrong type.
std::optional<double> number_field(const json& body, const char* name, std::optional<ApiError>& err) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) {
        err = ApiError{400, std::string("'") + name + "' must be a number", "invalid_request_error", name, "invalid_type"};
        return std::nullopt;
    }
    return it->get<double>();
}

std::optional<int64_t> integer_field(const json& body, const char* name, std::optional<ApiError>& err) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) return std::nullopt;
    if (!it->is_number_integer()) {
        err = ApiError{400, std::string("'") + name + "' must be an integer", "invalid_request_error", name,
                       "invalid_type"};
        return std::nullopt;
    }
    return it->get<int64_t>();
}

// The text of a message's content: a string or an array of {type:"text", text} parts.
std::optional<std::string> message_content(const json& content) {
    if (content.is_string()) return content.get<std::string>();
    if (content.is_null()) return std::string();
    if (!content.is_array()) return std::nullopt;
    std::string text;
    for (const auto& part : content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
            return std::nullopt;
        text += part["text"].get<std::string>();
    }
    return text;
}

std::string_view path_of(std::string_view target) {
    const size_t q = target.find('?');
    return q == std::string_view::npos ? target : target.substr(0, q);
}

// The value of `name` in the target's query (as sent, not percent-decoded); none when absent.
std::optional<std::string> query_value(std::string_view target, std::string_view name) {
    const size_t q = target.find('?');
    if (q == std::string_view::npos) return std::nullopt;
    std::string_view query = target.substr(q + 1);
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const size_t eq = pair.find('=');
        if (pair.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

// A session id the caller deleted: ids are not reused. (Another tenant's id is the caller's own, unused.)
ApiError deleted_session_error(std::string_view id) {
    return {404,
            "session '" + std::string(id) +
                "' does not exist and its id cannot be used again (it was deleted); start a new session with a new id",
            "invalid_request_error", "session_id", "session_not_found"};
}

// 401 like OpenAI's: the key is never echoed back.
HttpResponse unauthorized(bool had_header) {
    HttpResponse r = error_response(
        {401,
         had_header ? "Incorrect API key provided. Send a key this server was configured with, as "
                      "'Authorization: Bearer <key>'."
                    : "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                      "('Authorization: Bearer <key>').",
         "invalid_request_error", "", "invalid_api_key"});
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
}

}  // namespace

OpenAiRoutes::OpenAiRoutes(const engine::Model& model, Scheduler& scheduler, ServeMetrics& metrics, Clock& clock,
                           const OpenAiRoutesConfig& config, state::SessionStore* sessions, const StaticFiles* web,
                           ApiAccess access)
    : model_(model),
      scheduler_(scheduler),
      metrics_(metrics),
      clock_(clock),
      config_(config),
      sessions_(sessions),
      web_(web),
      keys_(access.keys && !access.keys->empty() ? access.keys : nullptr),
      limiter_(keys_ ? access.limiter : nullptr) {
    if (keys_) metrics_.register_tenants(keys_->tenants());
}

HttpResponse OpenAiRoutes::handle(const HttpRequest& request) {
    const std::string_view path = path_of(request.target);
    // Routes that may read or write the session store wait off the I/O threads.
    const bool uses_store = sessions_ && (path == "/v1/chat/completions" || path == "/v1/completions" ||
                                          path == "/v1/sessions" || path.starts_with("/v1/sessions/"));
    if (uses_store) {
        HttpResponse r;
        r.deferred = [this, request] { return respond(request); };
        return r;
    }
    return respond(request);
}

HttpResponse OpenAiRoutes::respond(const HttpRequest& request) {
    const std::string_view path = path_of(request.target);
    std::string route(path);
    HttpResponse r;
    // The API needs a key when keys are configured; probes, /metrics and the chat page's files do not.
    const bool api = path.starts_with("/v1/");
    Caller caller;
    if (api && keys_) {
        const AuthorizationFields authorization = authorization_fields(request.headers);
        if (authorization.count > 1) {
            r = error_response(
                {400,
                 "the request has " + std::to_string(authorization.count) +
                     " Authorization headers; send exactly one ('Authorization: Bearer <key>')",
                 "invalid_request_error", "", "duplicate_authorization"});
            metrics_.count_request("unauthenticated", r.status);
            return r;
        }
        const std::string_view header = authorization.value;
        const auto token = bearer_token(header);
        const auto key = token ? keys_->find(*token) : std::nullopt;
        if (!key) {
            r = unauthorized(!header.empty());
            metrics_.count_request("unauthenticated", r.status);
            return r;
        }
        caller = {keys_->key(*key).tenant, *key};
    }
    if (request.body_too_large) {
        r = error_response({413, "the request body is too large; send a smaller request", "invalid_request_error", "",
                            "request_too_large"});
    } else if (path == "/v1/chat/completions" || path == "/v1/completions") {
        if (request.method != "POST") {
            r = error_response({405, "use POST for " + route, "invalid_request_error", "", "method_not_allowed"});
        } else {
            try {
                r = completions(request, path == "/v1/chat/completions", caller);
            } catch (const nlohmann::json::exception& e) {
                r = error_response({400, std::string("the request does not have the expected shape: ") + e.what(),
                                    "invalid_request_error", "", "invalid_type"});
            }
            if (r.async) return r;  // counted when the generation ends
        }
    } else if (request.method == "GET" && path == "/healthz") {
        r = json_response(200, {{"status", "ok"}});
    } else if (request.method == "GET" && path == "/readyz") {
        if (draining())
            r = json_response(503, {{"status", "draining"}});
        else if (std::string why = config_.not_ready ? config_.not_ready() : std::string(); !why.empty())
            r = json_response(503, {{"status", why}});
        else
            r = json_response(200, {{"status", "ready"}});
    } else if (config_.serve_metrics && request.method == "GET" && path == "/metrics") {
        r.content_type = "text/plain; version=0.0.4";
        r.body = metrics_.render(scheduler_.stats());
    } else if (request.method == "GET" && path == "/v1/models") {
        r = models({});
    } else if (request.method == "GET" && path.starts_with("/v1/models/")) {
        route = "/v1/models/{id}";
        r = models(path.substr(std::string_view("/v1/models/").size()));
    } else if (sessions_ && path == "/v1/sessions") {
        r = sessions(request, {}, true, caller);
    } else if (sessions_ && path.starts_with("/v1/sessions/")) {
        route = "/v1/sessions/{id}";
        r = sessions(request, path.substr(std::string_view("/v1/sessions/").size()), false, caller);
    } else if (web_ && request.method == "GET" && !path.starts_with("/v1/")) {
        route = "static";
        if (auto file = web_->serve(path))
            r = std::move(*file);
        else
            r = error_response({404, "no file " + std::string(path) + " here", "invalid_request_error", "", "not_found"});
    } else {
        route = "other";
        r = error_response({404, "unknown route " + request.method + " " + std::string(path), "invalid_request_error",
                            "", "unknown_url"});
    }
    metrics_.count_request(route, r.status);
    if (api) metrics_.count_tenant_request(caller.tenant, r.status);
    return r;
}

HttpResponse OpenAiRoutes::models(std::string_view id) {
    const json m = {{"id", config_.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "assistd"}};
    if (id.empty()) return json_response(200, {{"object", "list"}, {"data", json::array({m})}});
    if (id != config_.model_id)
        return error_response({404, "the model '" + std::string(id) + "' does not exist", "invalid_request_error",
                               "model", "model_not_found"});
    return json_response(200, m);
}

HttpResponse OpenAiRoutes::create_session(const HttpRequest& request, const Caller& caller) {
    if (draining())
        return error_response({503, "the server is shutting down; retry on another instance", "server_error", "",
                               "server_shutting_down"},
                              config_.retry_after_s);
    std::string title;
    if (!request.body.empty()) {
        json body;
        try {
            body = json::parse(request.body);
        } catch (const json::parse_error& e) {
            return error_response({400, std::string("the request body is not valid JSON: ") + e.what(),
                                   "invalid_request_error", "", "invalid_json"});
        }
        if (!body.is_object())
            return error_response({400, "the request body must be a JSON object", "invalid_request_error", "", "invalid_json"});
        for (const auto& [key, value] : body.items()) {
            if (key != "title")
                return error_response({400, "unknown field '" + key + "': POST /v1/sessions takes only 'title'",
                                       "invalid_request_error", key, "unknown_parameter"});
            if (!value.is_string())
                return error_response({400, "'title' must be a string", "invalid_request_error", "title", "invalid_type"});
            title = session_title(value.get<std::string>(), 200);
        }
    }
    // A fresh random id: new everywhere, so it needs no answer from other
    // nodes (a turn on an unknown id does; docs/cluster.md).
    const std::string id = new_session_id();
    if (auto created = sessions_->create(state::tenant_session_key(caller.tenant, id), caller.tenant, title);
        !created.ok())
        return store_error_response(created.error(), config_.retry_after_s);
    return json_response(200, {{"id", id},
                               {"object", "session"},
                               {"created_at", clock_.now_unix_ms() / 1000},
                               {"title", title},
                               {"message_count", 0}});
}

HttpResponse OpenAiRoutes::sessions(const HttpRequest& request, std::string_view id, bool list,
                                    const Caller& caller) {
    if (list) {
        if (request.method == "POST") return create_session(request, caller);
        if (request.method != "GET")
            return error_response(
                {405, "use GET (list) or POST (create) for /v1/sessions", "invalid_request_error", "", "method_not_allowed"});
        std::vector<state::Session> found;
        for (auto& owned : state::list_tenant_sessions(*sessions_, caller.tenant))
            found.push_back(std::move(owned.session));
        std::sort(found.begin(), found.end(), [](const state::Session& a, const state::Session& b) {
            return a.created_at_ms != b.created_at_ms ? a.created_at_ms > b.created_at_ms : a.id < b.id;
        });
        json data = json::array();
        for (const auto& s : found)
            data.push_back({{"id", s.id},
                            {"object", "session"},
                            {"created_at", s.created_at_ms / 1000},
                            {"title", s.title},
                            {"message_count", s.messages.size()}});
        return json_response(200, {{"object", "list"}, {"data", std::move(data)}});
    }
    if (auto valid = validate_session_id(id); !valid.ok())
        return error_response({400, valid.error().message, "invalid_request_error", "session_id", "invalid_session_id"});
    if (request.method != "GET" && request.method != "DELETE")
        return error_response(
            {405, "use GET or DELETE for /v1/sessions/{id}", "invalid_request_error", "", "method_not_allowed"});
    // ?local=1: this node's copy only (a fleet node's replica as it is, for comparing replicas).
    bool local = false;
    if (auto value = query_value(request.target, "local")) {
        if (*value == "1" || *value == "true")
            local = true;
        else if (*value != "0" && *value != "false")
            return error_response({400, "'local' must be 1 or 0 (true or false), got '" + *value + "'",
                                   "invalid_request_error", "local", "invalid_value"});
        if (local && request.method != "GET")
            return error_response({400, "'local=1' is for GET (reading this node's copy); DELETE without it",
                                   "invalid_request_error", "local", "invalid_value"});
    }
    state::SessionStore& store = local && config_.local_sessions ? *config_.local_sessions : *sessions_;
    // Another tenant's session is not found: its key is not the caller's.
    auto found = state::find_tenant_session(store, caller.tenant, id);
    if (local && !found.ok() && found.error().code == ErrorCode::kNotFound)
        return error_response({404, "this node holds no copy of session '" + std::string(id) + "'",
                               "invalid_request_error", "session_id", "session_not_found"});
    if (!found.ok()) return store_error_response(found.error(), config_.retry_after_s);
    if (request.method == "GET") return json_response(200, session_json(found->session));
    // The store tombstones any key it is asked to remove, so only existing sessions get here.
    if (auto removed = sessions_->remove(found->key); !removed.ok())
        return store_error_response(removed.error(), config_.retry_after_s);
    return json_response(200, {{"id", std::string(id)}, {"object", "session.deleted"}, {"deleted", true}});
}

HttpResponse OpenAiRoutes::completions(const HttpRequest& request, bool chat, const Caller& caller) {
    const std::string route = chat ? "/v1/chat/completions" : "/v1/completions";
    if (draining())
        return error_response({503, "the server is shutting down; retry on another instance", "server_error", "",
                               "server_shutting_down"},
                              config_.retry_after_s);
    json body;
    try {
        body = json::parse(request.body);
    } catch (const json::parse_error& e) {
        const bool utf8 = std::string_view(e.what()).find("UTF-8") != std::string_view::npos;
        return error_response({400,
                               utf8 ? "the request body is not valid UTF-8"
                                    : std::string("the request body is not valid JSON: ") + e.what(),
                               "invalid_request_error", "", utf8 ? "invalid_utf8" : "invalid_json"});
    }
    if (!body.is_object())
        return error_response({400, "the request body must be a JSON object", "invalid_request_error", "", "invalid_json"});

    // model
    if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
        if (!it->is_string())
            return error_response({400, "'model' must be a string", "invalid_request_error", "model", "invalid_type"});
        if (it->get<std::string>() != config_.model_id)
            return error_response({404, "the model '" + it->get<std::string>() + "' does not exist; GET /v1/models lists '" +
                                            config_.model_id + "'",
                                   "invalid_request_error", "model", "model_not_found"});
    }

    // The session: the body's session_id, else the X-Session-Id header.
    std::string session_id;
    if (auto it = body.find("session_id"); it != body.end() && !it->is_null()) {
        if (!it->is_string())
            return error_response(
                {400, "'session_id' must be a string", "invalid_request_error", "session_id", "invalid_type"});
        session_id = it->get<std::string>();
    } else if (!request.header("X-Session-Id").empty()) {
        session_id = std::string(request.header("X-Session-Id"));
    }
    const bool in_session = body.contains("session_id") || !request.header("X-Session-Id").empty();
    if (in_session) {
        if (!chat)
            return error_response({400, "sessions work with /v1/chat/completions only", "invalid_request_error",
                                   "session_id", "invalid_value"});
        if (!sessions_)
            return error_response({400, "this server keeps no sessions; send the whole conversation in 'messages'",
                                   "invalid_request_error", "session_id", "sessions_disabled"});
        if (auto valid = validate_session_id(session_id); !valid.ok())
            return error_response(
                {400, valid.error().message, "invalid_request_error", "session_id", "invalid_session_id"});
    }
    // Where a new session of this tenant goes; an existing one may live elsewhere (an earlier version's key).
    std::string session_key = in_session ? state::tenant_session_key(caller.tenant, session_id) : std::string();
    // One turn per session at a time: held from reading the history to storing the answer.
    std::shared_ptr<SessionTurns::Lease> turn;
    if (in_session) {
        turn = session_turns_.try_begin(session_key);
        if (!turn)
            return error_response({409,
                                   "session '" + session_id +
                                       "' is answering another request; send the next message after that answer "
                                       "completes (for a stream, after data: [DONE])",
                                   "invalid_request_error", "session_id", "session_busy"},
                                  config_.retry_after_s);
    }
    std::vector<engine::ChatMessage> new_messages;  // in a session: what this request appends
    bool session_exists = false;

    // knowledge: facts from the graph (chat only; serve/knowledge_context.h).
    std::optional<KnowledgeRequest> knowledge_request;
    std::optional<KnowledgeUsed> knowledge_used;
    {
        auto field = parse_knowledge_field(body);
        if (auto* e = std::get_if<KnowledgeError>(&field))
            return error_response({e->status, e->message, "invalid_request_error", e->param, e->code});
        knowledge_request = std::get<std::optional<KnowledgeRequest>>(std::move(field));
        if (knowledge_request && !chat)
            return error_response({400, "'knowledge' works with /v1/chat/completions only", "invalid_request_error",
                                   "knowledge", "invalid_value"});
        if (knowledge_request && !config_.knowledge)
            return error_response({400,
                                   "this server keeps no knowledge graph: run it with a pipeline (--knowledge-pipeline; "
                                   "docs/knowledge.md)",
                                   "invalid_request_error", "knowledge", "knowledge_unavailable"});
    }

    std::optional<ApiError> err;
    GenerationRequest gen;
    const auto& tok = model_.tokenizer();
    std::vector<std::string> stops;

    // The prompt.
    if (chat) {
        auto it = body.find("messages");
        if (it == body.end() || !it->is_array() || it->empty())
            return error_response({400, "'messages' must be a non-empty array of {role, content}",
                                   "invalid_request_error", "messages", "invalid_type"});
        if (config_.max_messages > 0 && it->size() > config_.max_messages)
            return error_response({400,
                                   "'messages' has " + std::to_string(it->size()) + " messages; this server takes at most " +
                                       std::to_string(config_.max_messages) + " per request",
                                   "invalid_request_error", "messages", "too_many_messages"});
        std::vector<engine::ChatMessage> messages;
        if (in_session) {
            // The stored conversation comes first; the request carries only what is new.
            // Another tenant's session of this id is not found: this request starts the caller's own.
            auto stored = state::find_tenant_session(*sessions_, caller.tenant, session_id);
            if (stored.ok()) {
                session_exists = true;
                session_key = std::move(stored->key);
                for (auto& m : stored->session.messages) messages.push_back({std::move(m.role), std::move(m.content)});
            } else if (stored.error().code != ErrorCode::kNotFound) {
                return store_error_response(stored.error(), config_.retry_after_s);
            }
        }
        const size_t stored_count = messages.size();
        for (size_t i = 0; i < it->size(); ++i) {
            const json& m = (*it)[i];
            const std::string param = "messages[" + std::to_string(i) + "]";
            if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
                return error_response({400, param + " must be an object with a string 'role'", "invalid_request_error",
                                       param, "invalid_type"});
            std::string role = m["role"].get<std::string>();
            if (role == "developer") role = "system";
            if (role != "system" && role != "user" && role != "assistant")
                return error_response({400, param + ".role must be system, developer, user or assistant",
                                       "invalid_request_error", param + ".role", "invalid_value"});
            auto content = message_content(m.contains("content") ? m["content"] : json(nullptr));
            if (!content)
                return error_response({400, param + ".content must be a string or an array of text parts",
                                       "invalid_request_error", param + ".content", "invalid_type"});
            messages.push_back({role, std::move(*content)});
        }
        if (in_session) new_messages.assign(messages.begin() + static_cast<std::ptrdiff_t>(stored_count), messages.end());
        // Facts from the knowledge graph for the prompt only (never stored in the session).
        if (knowledge_request) {
            auto added = add_knowledge(*config_.knowledge, *knowledge_request, messages, [&](std::string_view line) {
                return tok.encode(line, false, false).size();
            });
            if (auto* e = std::get_if<KnowledgeError>(&added))
                return error_response({e->status, e->message, e->status == 503 ? "server_error" : "invalid_request_error",
                                       e->param, e->code},
                                      e->status == 503 ? config_.retry_after_s : 0);
            knowledge_used = std::get<KnowledgeUsed>(std::move(added));
        }
        // Message text stays text: only the template's markup becomes special tokens.
        gen.prompt = engine::encode_chat(tok, model_.chat_template().render(messages, true), tok.add_bos_default());
        for (auto& s : model_.chat_template().stop_strings()) stops.push_back(s);
    } else {
        auto it = body.find("prompt");
        std::string prompt;
        if (it != body.end() && it->is_string()) {
            prompt = it->get<std::string>();
        } else if (it != body.end() && it->is_array() && it->size() == 1 && (*it)[0].is_string()) {
            prompt = (*it)[0].get<std::string>();
        } else {
            return error_response({400, "'prompt' must be a string (or an array of one string)",
                                   "invalid_request_error", "prompt", "invalid_type"});
        }
        gen.prompt = tok.encode(prompt, tok.add_bos_default(), false);
        if (gen.prompt.empty())
            return error_response({400, "'prompt' is empty and the model adds no BOS token", "invalid_request_error",
                                   "prompt", "invalid_value"});
    }

    // Sampling and limits.
    // max_completion_tokens is the newer name; errors name the field the client sent.
    const char* max_tokens_param = "max_completion_tokens";
    auto max_tokens = integer_field(body, max_tokens_param, err);
    if (!max_tokens && !err) {
        max_tokens_param = "max_tokens";
        max_tokens = integer_field(body, max_tokens_param, err);
    }
    auto temperature = number_field(body, "temperature", err);
    auto top_p = number_field(body, "top_p", err);
    auto seed = integer_field(body, "seed", err);
    auto n = integer_field(body, "n", err);
    if (err) return error_response(*err);
    if (max_tokens && *max_tokens < 1)
        return error_response({400, std::string(max_tokens_param) + " must be at least 1", "invalid_request_error",
                               max_tokens_param, "invalid_value"});
    if (temperature && (*temperature < 0 || *temperature > 2))
        return error_response({400, "temperature must be between 0 and 2", "invalid_request_error", "temperature",
                               "invalid_value"});
    if (top_p && (*top_p <= 0 || *top_p > 1))
        return error_response({400, "top_p must be in (0, 1]", "invalid_request_error", "top_p", "invalid_value"});
    if (n && *n != 1)
        return error_response({400, "only n=1 is supported", "invalid_request_error", "n", "invalid_value"});

    if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
        if (it->is_string()) {
            stops.push_back(it->get<std::string>());
        } else if (it->is_array() && it->size() <= config_.max_stop_strings) {
            for (const auto& s : *it) {
                if (!s.is_string())
                    return error_response({400, "'stop' must be a string or an array of strings",
                                           "invalid_request_error", "stop", "invalid_type"});
                stops.push_back(s.get<std::string>());
            }
        } else {
            return error_response({400,
                                   "'stop' must be a string or an array of at most " +
                                       std::to_string(config_.max_stop_strings) + " strings",
                                   "invalid_request_error", "stop", "invalid_type"});
        }
        std::erase_if(stops, [](const std::string& s) { return s.empty(); });
    }

    bool stream = false, include_usage = false;
    if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
        if (!it->is_boolean())
            return error_response({400, "'stream' must be a boolean", "invalid_request_error", "stream", "invalid_type"});
        stream = it->get<bool>();
    }
    if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
        if (!it->is_object())
            return error_response({400, "'stream_options' must be an object", "invalid_request_error", "stream_options",
                                   "invalid_type"});
        if (auto u = it->find("include_usage"); u != it->end()) {
            if (!u->is_boolean())
                return error_response({400, "'stream_options.include_usage' must be a boolean", "invalid_request_error",
                                       "stream_options.include_usage", "invalid_type"});
            include_usage = u->get<bool>();
        }
        // As OpenAI: stream_options belongs to streamed requests only.
        if (!stream)
            return error_response({400, "'stream_options' is only allowed when 'stream' is true",
                                   "invalid_request_error", "stream_options", "invalid_value"});
    }
    if (auto it = body.find("precision"); it != body.end() && !it->is_null()) {
        auto p = it->is_string() ? engine::precision_from_name(it->get<std::string>()) : std::nullopt;
        if (!p)
            return error_response({400, "'precision' must be one of fp32, fp16, bf16, native", "invalid_request_error",
                                   "precision", "invalid_value"});
        gen.precision = *p;
    } else if (caller.key) {
        gen.precision = keys_->key(*caller.key).default_precision;  // the tenant's default, if it has one
    }
    // Our extension (llama.cpp's name): generate exactly max_tokens, past end-of-generation tokens.
    if (auto it = body.find("ignore_eos"); it != body.end() && !it->is_null()) {
        if (!it->is_boolean())
            return error_response(
                {400, "'ignore_eos' must be a boolean", "invalid_request_error", "ignore_eos", "invalid_type"});
        gen.ignore_eos = it->get<bool>();
    }

    if (config_.max_prompt_tokens > 0 && gen.prompt.size() > config_.max_prompt_tokens)
        return error_response({400,
                               "the prompt has " + std::to_string(gen.prompt.size()) +
                                   " tokens; this server takes at most " + std::to_string(config_.max_prompt_tokens) +
                                   " prompt tokens per request: shorten the " + (chat ? "messages" : "prompt"),
                               "invalid_request_error", chat ? "messages" : "prompt", "prompt_too_long"});
    const size_t n_ctx = model_.info().n_ctx;
    if (gen.prompt.size() >= n_ctx || (max_tokens && gen.prompt.size() + static_cast<size_t>(*max_tokens) > n_ctx))
        return error_response({400,
                               "this model's context is " + std::to_string(n_ctx) + " tokens; the prompt has " +
                                   std::to_string(gen.prompt.size()) + " tokens" +
                                   (max_tokens ? " and max_tokens asks for " + std::to_string(*max_tokens) : "") +
                                   "; shorten the messages or lower max_tokens",
                               "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded"});
    gen.max_tokens = max_tokens ? static_cast<size_t>(*max_tokens)
                                : std::min(config_.default_max_tokens, n_ctx - gen.prompt.size());
    const uint64_t number = request_counter_.fetch_add(1) + 1;
    gen.sampling.temperature = static_cast<float>(temperature.value_or(1.0));
    gen.sampling.top_p = static_cast<float>(top_p.value_or(1.0));
    gen.sampling.seed = seed ? static_cast<uint64_t>(*seed) : splitmix(config_.seed ^ number);
    gen.stops = std::move(stops);
    gen.deadline_mono_ns = clock_.now_mono_ns() + config_.queue_timeout_ms * 1'000'000;
    if (in_session) gen.kv_key = session_key;  // its standby KV copies live under it

    // The key's rate limits: one request, the prompt and the completion tokens reserved now
    // (max_tokens), settled when it ends; a request that ends before generating gives them back.
    HttpHeaders rate_headers;
    size_t reserved_tokens = 0;
    ReservationGuard reservation;
    if (caller.key && limiter_) {
        const RateDecision d = limiter_->admit(*caller.key, gen.prompt.size(), gen.max_tokens);
        reserved_tokens = d.reserved_tokens;
        if (d.admitted) reservation = ReservationGuard{limiter_, *caller.key, reserved_tokens};
        rate_headers = rate_limit_headers(d.state);
        if (!d.admitted) {
            metrics_.count_rate_limited(caller.tenant, d.limit);
            const ApiKeyConfig& k = keys_->key(*caller.key);
            std::string message;
            if (d.too_large)
                message = "Request too large for tokens per minute (TPM): Limit " +
                          std::to_string(static_cast<int64_t>(k.tokens_per_minute)) + ", Requested " +
                          std::to_string(gen.prompt.size()) + ". Shorten the " + (chat ? "messages" : "prompt") +
                          " to run it.";
            else if (d.limit == "requests")
                message = "Rate limit reached for requests per minute (RPM): Limit " +
                          std::to_string(static_cast<int64_t>(k.requests_per_minute)) + ". Please try again in " +
                          std::to_string(d.retry_after_s) + "s.";
            else
                message = "Rate limit reached for tokens per minute (TPM): Limit " +
                          std::to_string(static_cast<int64_t>(k.tokens_per_minute)) + ", Requested " +
                          std::to_string(gen.prompt.size()) + ". Please try again in " +
                          std::to_string(d.retry_after_s) + "s.";
            HttpResponse refused = error_response({429, message, d.limit, "", "rate_limit_exceeded"}, d.retry_after_s);
            for (auto& h : rate_headers) refused.headers.push_back(std::move(h));
            return refused;
        }
    }
    metrics_.count_tenant_precision(caller.tenant, gen.precision ? engine::precision_name(*gen.precision) : "policy");

    if (in_session && !session_exists) {
        std::string first_user;
        for (const auto& m : new_messages)
            if (m.role == "user") {
                first_user = m.content;
                break;
            }
        if (auto created = sessions_->create(session_key, caller.tenant, session_title(first_user)); !created.ok()) {
            // The store failed (e.g. it takes no more writes): say so, not that the id is unusable.
            if (created.error().code == ErrorCode::kIo)
                return store_error_response(created.error(), config_.retry_after_s);
            // Another node may have created it just now for this tenant; a deleted id stays gone.
            auto now = state::find_tenant_session(*sessions_, caller.tenant, session_id);
            if (!now.ok() && created.error().code == ErrorCode::kInvalidArgument)
                return error_response(deleted_session_error(session_id));
            if (!now.ok()) return store_error_response(created.error(), config_.retry_after_s);
            session_key = std::move(now->key);
        }
    }

    auto channel = scheduler_.submit(std::move(gen));
    if (!channel) {
        const Error& e = channel.error();
        if (e.code == ErrorCode::kResourceExhausted)
            return error_response({429, e.message, "rate_limit_error", "", "queue_full"}, config_.retry_after_s);
        if (e.code == ErrorCode::kOutOfRange)
            return error_response({400, e.message, "invalid_request_error", chat ? "messages" : "prompt",
                                   "context_length_exceeded"});
        return error_response({400, e.message, "invalid_request_error", "", ""});
    }
    // Only an admitted request adds to the conversation, so a retried 429 does not repeat the message.
    for (const auto& m : new_messages) {
        if (auto appended = sessions_->append_message(session_key, {m.role, m.content}); !appended.ok()) {
            (*channel)->cancel();
            return store_error_response(appended.error(), config_.retry_after_s);
        }
    }
    HttpResponse r;
    r.stream = stream;
    r.content_type = stream ? "text/event-stream" : "application/json";
    r.headers = std::move(rate_headers);
    if (knowledge_used) {
        std::string positions;
        for (const auto& [source, position] : knowledge_used->positions)
            positions += (positions.empty() ? "" : "; ") + source + "=" + position;
        r.headers.emplace_back("X-Knowledge-Positions", positions);
    }
    reservation.release();  // from here on_done settles it
    OnCompletionDone on_done = [this, tenant = caller.tenant, key = caller.key, reserved_tokens](
                                   int status, size_t completion_tokens) {
        metrics_.count_tenant_request(tenant, status);
        if (key && limiter_) limiter_->settle(*key, reserved_tokens, completion_tokens);
    };
    auto completion = std::make_shared<CompletionBody>(*channel, chat, stream, include_usage,
                                               (chat ? "chatcmpl-" : "cmpl-") + std::to_string(number),
                                               config_.model_id, clock_.now_unix_ms() / 1000, metrics_, route,
                                               config_.retry_after_s, in_session ? sessions_ : nullptr,
                                               std::move(session_key), session_id, std::move(on_done),
                                               std::move(turn), config_.blocking);
    if (knowledge_used) completion->set_extra("knowledge", knowledge_used->to_json());
    r.async = std::move(completion);
    return r;
}

}  // namespace assistd::serve
