// The only Beast translation unit: sessions are C++20 coroutines on a strand
// per connection; generations are awaited through AsyncBody wakers.
#include "serve/http_server.h"

#include "serve/asio.h"
#include "serve/blocking_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace assistd::serve {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kWriteTimeout = std::chrono::seconds(30);
// After answering a request it did not read to its end, the server reads and drops
// what the client still sends, this long or this much at most, before closing:
// closing on unread bytes sends a reset, which can destroy the answer in flight.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = size_t{8} << 20;

using RequestParser = http::request_parser<http::string_body>;

// How reading one request ended.
struct RequestRead {
    bool gone = false;       // closed, reset or idle between requests: nothing to answer
    bool too_large = false;  // the body is over max_body_bytes: the handler answers (413)
    int status = 0;          // nonzero: the request cannot be read; answer this and close
    std::string message;
    std::string code;
};

RequestRead client_gone() {
    RequestRead r;
    r.gone = true;
    return r;
}

RequestRead body_over_limit() {
    RequestRead r;
    r.too_large = true;
    return r;
}

RequestRead refused(int status, std::string message, std::string code) {
    RequestRead r;
    r.status = status;
    r.message = std::move(message);
    r.code = std::move(code);
    return r;
}

std::string json_escaped(std::string_view text) {
    std::string out;
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) >= 0x20) out += c;
    }
    return out;
}

// The OpenAI error shape, as the routes answer.
std::string error_body(std::string_view message, std::string_view code) {
    return R"({"error":{"message":")" + json_escaped(message) +
           R"(","type":"invalid_request_error","param":null,"code":")" + std::string(code) +
           R"("}})";
}

// A read that failed: what to answer, or nothing when the client is gone.
RequestRead unreadable(const beast::error_code& ec, const HttpServerConfig& config) {
    if (ec.category() != beast::error_code(http::error::bad_method).category() ||
        ec == http::error::end_of_stream || ec == http::error::partial_message)
        return client_gone();
    switch (static_cast<http::error>(ec.value())) {
        case http::error::header_limit:
            return refused(431,
                           "the request header is larger than " +
                               std::to_string(config.max_header_bytes) +
                               " bytes; send fewer or shorter header fields",
                           "request_header_too_large");
        case http::error::bad_method:
        case http::error::bad_target:
        case http::error::bad_version:
            return refused(400, "the request line is malformed; send 'METHOD /path HTTP/1.1'",
                           "invalid_request_line");
        case http::error::bad_chunk:
        case http::error::bad_chunk_extension:
            return refused(400,
                           "the chunked request body is malformed; send each chunk as its size in "
                           "hex, CRLF, the data and CRLF, and end with a chunk of size 0",
                           "invalid_chunked_body");
        case http::error::bad_content_length:
        case http::error::bad_transfer_encoding:
            return refused(
                400,
                "the request's body length is ambiguous; send one Content-Length or "
                "Transfer-Encoding: chunked, never both, two of either or two different lengths",
                "ambiguous_body_length");
        default:
            return refused(
                400,
                "the request is not valid HTTP/1.1 (" + ec.message() + "); check its header fields",
                "invalid_request");
    }
}

std::string_view trimmed(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Beast decodes chunked only: a request whose transfer codings do not end with
// a lone chunked has no body length the server can trust (RFC 9112 6.1, 6.3).
std::optional<RequestRead> transfer_coding_error(const RequestParser& parser) {
    std::vector<std::string_view> codings;
    for (const auto& f : parser.get()) {
        if (f.name() != http::field::transfer_encoding) continue;
        std::string_view v(f.value().data(), f.value().size());
        while (!v.empty()) {
            const size_t comma = v.find(',');
            const std::string_view coding = trimmed(v.substr(0, comma));
            if (!coding.empty()) codings.push_back(coding);
            v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
        }
    }
    const auto names_chunked = [](std::string_view c) {
        return beast::iequals(beast::string_view(c.data(), c.size()), "chunked");
    };
    if (codings.empty() && !parser.chunked()) return std::nullopt;
    if (codings.empty() || !names_chunked(codings.back()) || !parser.chunked())
        return refused(400,
                       "the request's Transfer-Encoding does not end with chunked, so its body "
                       "length is unknown; send the body chunked or with a Content-Length",
                       "invalid_transfer_encoding");
    if (codings.size() > 1)
        return refused(
            501,
            "only the chunked transfer coding is supported; send the body without other codings",
            "unsupported_transfer_encoding");
    return std::nullopt;
}

// Shared by a session and its disconnect watcher (both on the connection's strand).
struct Pending {
    std::shared_ptr<AsyncBody> body;
    std::shared_ptr<asio::steady_timer> timer;
    bool done = false;
    bool client_gone = false;
};

class HttpServerImpl final : public HttpServer {
public:
    HttpServerImpl(const HttpServerConfig& config, HttpHandler handler)
        : config_(config),
          handler_(std::move(handler)),
          acceptor_(ioc_),
          accept_strand_(asio::make_strand(ioc_)),
          slot_free_(accept_strand_) {
        if (!config_.blocking) {
            own_blocking_ = std::make_unique<BlockingPool>(4);
            blocking_ = own_blocking_.get();
        } else {
            blocking_ = config_.blocking;
        }
    }

    ~HttpServerImpl() override { stop(); }

    Status listen() {
        beast::error_code ec;
        auto address = asio::ip::make_address(config_.host, ec);
        if (ec) return make_error(ErrorCode::kInvalidArgument, "cannot parse host '" + config_.host + "': " + ec.message());
        tcp::endpoint ep(address, config_.port);
        acceptor_.open(ep.protocol(), ec);
        if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) acceptor_.bind(ep, ec);
        if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
        if (ec)
            return make_error(ErrorCode::kIo, "cannot listen on " + config_.host + ":" + std::to_string(config_.port) +
                                                  ": " + ec.message());
        port_ = acceptor_.local_endpoint().port();
        asio::co_spawn(accept_strand_, accept_loop(), asio::detached);
        const int n = std::max(1, config_.io_threads);
        for (int i = 0; i < n; ++i) threads_.emplace_back([this] { ioc_.run(); });
        return {};
    }

    uint16_t port() const override { return port_; }
    size_t active_requests() const override { return active_.load(); }

    void stop() override {
        if (stopped_.exchange(true)) return;
        {
            std::lock_guard lk(bodies_mu_);
            for (auto& b : bodies_) {
                b->clear_waker();
                b->cancel();
            }
        }
        asio::post(accept_strand_, [this] {
            beast::error_code ec;
            acceptor_.close(ec);
            slot_free_.cancel();
        });
        ioc_.stop();
        for (auto& t : threads_)
            if (t.joinable()) t.join();
        // Deferred work still running holds this io_context's executors: wait
        // for it (a store's waits are bounded by its own timeouts).
        std::unique_lock lk(deferred_mu_);
        deferred_cv_.wait(lk, [&] { return deferred_running_ == 0; });
    }

private:
    // On accept_strand_, as is every wake-up of slot_free_: a connection that
    // closes between the check of the count and the wait still wakes it.
    asio::awaitable<void> accept_loop() {
        for (;;) {
            beast::error_code ec;
            while (config_.max_connections > 0 && connections_.load() >= config_.max_connections) {
                slot_free_.expires_at(asio::steady_timer::time_point::max());
                co_await slot_free_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                if (!acceptor_.is_open()) co_return;
            }
            tcp::socket socket = co_await acceptor_.async_accept(asio::make_strand(ioc_),
                                                                  asio::redirect_error(asio::use_awaitable, ec));
            if (ec) {
                if (!acceptor_.is_open()) co_return;
                // Out of file descriptors (EMFILE) or memory: back off rather than spin
                // on the same error; the backlog holds the clients meanwhile.
                asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(20));
                co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
                continue;
            }
            connections_.fetch_add(1);
            auto ex = socket.get_executor();
            asio::co_spawn(ex, session(std::make_shared<beast::tcp_stream>(std::move(socket))), asio::detached);
        }
    }

    void track(const std::shared_ptr<AsyncBody>& b, bool add) {
        std::lock_guard lk(bodies_mu_);
        if (add)
            bodies_.insert(b);
        else
            bodies_.erase(b);
    }

    static HttpRequest to_request(const http::request<http::string_body>& r) {
        HttpRequest req;
        req.method = std::string(r.method_string());
        req.target = std::string(r.target());
        for (const auto& f : r) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
        req.body = r.body();
        return req;
    }

    template <class Message>
    static void fill_head(Message& h, int status, const std::string& content_type,
                          const HttpHeaders& extra, bool keep_alive) {
        h.result(static_cast<unsigned>(status));
        h.set(http::field::server, "assistd");
        if (!content_type.empty()) h.set(http::field::content_type, content_type);
        for (const auto& [k, v] : extra) h.set(k, v);
        h.keep_alive(keep_alive);
    }

    asio::awaitable<bool> write_full(beast::tcp_stream& stream, int status, const std::string& content_type,
                                     const HttpHeaders& extra, std::string body, unsigned version, bool keep_alive) {
        http::response<http::string_body> res;
        res.version(version);
        fill_head(res, status, content_type, extra, keep_alive);
        res.body() = std::move(body);
        res.prepare_payload();
        beast::error_code ec;
        stream.expires_after(kWriteTimeout);
        co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
        co_return !ec;
    }

    // Notices a client that closes its connection while its response is pending.
    // It peeks at the socket rather than waiting for readability and asking how
    // much is there: a readiness event can be stale (epoll reported the request's
    // bytes, another I/O thread read them before the event was handled), and
    // "readable with nothing to read" then cut off a client that was waiting for
    // its answer. A peek completes only on a byte (a pipelined request: the client
    // is there), the end of the stream or an error; Asio retries it when woken
    // with nothing to read.
    static asio::awaitable<void> watch_disconnect(std::shared_ptr<beast::tcp_stream> stream,
                                                  std::shared_ptr<Pending> p) {
        char byte;
        beast::error_code ec;
        co_await stream->socket().async_receive(asio::buffer(&byte, 1), tcp::socket::message_peek,
                                                asio::redirect_error(asio::use_awaitable, ec));
        if (p->done || !ec) co_return;
        p->client_gone = true;
        p->body->cancel();
        p->timer->cancel();
    }

    // Waits for the body's next bytes (or its end); false when the client left.
    static asio::awaitable<bool> next(Pending& p, std::string& out, bool& finished) {
        for (;;) {
            finished = p.body->poll(out);
            if (finished || !out.empty()) co_return true;
            if (p.client_gone) co_return false;
            p.timer->expires_at(asio::steady_timer::time_point::max());
            beast::error_code ec;
            co_await p.timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
            if (p.client_gone) co_return false;
        }
    }

    asio::awaitable<bool> write_async(std::shared_ptr<beast::tcp_stream> stream, HttpResponse& res, unsigned version,
                                      bool keep_alive) {
        auto ex = co_await asio::this_coro::executor;
        auto p = std::make_shared<Pending>();
        p->body = res.async;
        p->timer = std::make_shared<asio::steady_timer>(ex);
        track(p->body, true);
        p->body->set_waker([ex, timer = p->timer] { asio::post(ex, [timer] { timer->cancel(); }); });
        asio::co_spawn(ex, watch_disconnect(stream, p), asio::detached);

        bool ok = true;
        std::string chunk;
        bool finished = false;
        ok = co_await next(*p, chunk, finished);
        const int status = p->body->status();
        if (ok && (!res.stream || status != 200)) {
            // One complete response: wait for the whole body.
            while (ok && !finished) ok = co_await next(*p, chunk, finished);
            if (ok) {
                auto headers = res.headers;
                for (auto& h : p->body->headers()) headers.push_back(h);
                ok = co_await write_full(*stream, p->body->status(), res.content_type, headers, std::move(chunk),
                                         version, keep_alive);
            }
        } else if (ok) {
            http::response<http::empty_body> head;
            head.version(version);
            fill_head(head, 200, res.content_type, res.headers, keep_alive);
            head.set(http::field::cache_control, "no-cache");
            head.chunked(true);
            http::response_serializer<http::empty_body> sr(head);
            beast::error_code ec;
            stream->expires_after(kWriteTimeout);
            co_await http::async_write_header(*stream, sr, asio::redirect_error(asio::use_awaitable, ec));
            ok = !ec;
            while (ok) {
                if (!chunk.empty()) {
                    stream->expires_after(kWriteTimeout);
                    co_await asio::async_write(*stream, http::make_chunk(asio::buffer(chunk)),
                                               asio::redirect_error(asio::use_awaitable, ec));
                    chunk.clear();
                    if (ec) {
                        ok = false;
                        break;
                    }
                }
                if (finished) {
                    stream->expires_after(kWriteTimeout);
                    co_await asio::async_write(*stream, http::make_chunk_last(),
                                               asio::redirect_error(asio::use_awaitable, ec));
                    ok = !ec;
                    break;
                }
                ok = co_await next(*p, chunk, finished);
            }
        }
        p->done = true;
        p->body->clear_waker();
        if (!ok || !finished) p->body->cancel();  // the client went away: free its slot now
        track(p->body, false);
        beast::error_code ec;
        stream->socket().cancel(ec);  // ends the watcher
        co_return ok;
    }

    static HttpResponse internal_error() {
        HttpResponse res;
        res.status = 500;
        res.body = R"({"error":{"message":"internal error","type":"server_error","param":null,"code":null}})";
        return res;
    }

    // Runs `work` on the blocking pool; the coroutine waits on a timer that
    // the pool's thread cancels through the connection's strand, so the wake
    // cannot come before the wait is registered.
    asio::awaitable<HttpResponse> run_deferred(std::function<HttpResponse()> work) {
        struct Waiting {
            std::shared_ptr<asio::steady_timer> timer;
            std::atomic<bool> done{false};
            HttpResponse result;
        };
        auto ex = co_await asio::this_coro::executor;
        auto w = std::make_shared<Waiting>();
        w->timer = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
        {
            std::lock_guard lk(deferred_mu_);
            ++deferred_running_;
        }
        const bool posted = blocking_->post([this, w, ex, work = std::move(work)]() mutable {
            {
                auto waiting = std::move(w);
                auto strand = std::move(ex);
                auto job = std::move(work);
                HttpResponse r;
                try {
                    r = job();
                } catch (const std::exception&) {
                    r = internal_error();
                }
                r.deferred = nullptr;
                waiting->result = std::move(r);
                waiting->done.store(true, std::memory_order_release);
                asio::post(strand, [waiting] { waiting->timer->cancel(); });
            }  // nothing of the io_context is held past here
            std::lock_guard lk(deferred_mu_);
            if (--deferred_running_ == 0) deferred_cv_.notify_all();
        });
        if (!posted) {  // the pool is stopping: so is the server
            std::lock_guard lk(deferred_mu_);
            if (--deferred_running_ == 0) deferred_cv_.notify_all();
            co_return internal_error();
        }
        while (!w->done.load(std::memory_order_acquire)) {
            beast::error_code ec;
            co_await w->timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        co_return std::move(w->result);
    }

    // Reads a request's header by config_.header_timeout_ms. The deadline is a
    // timer of its own that cancels the read, not the stream's expiry (which
    // closes the socket), so a 408 can still be sent. ec: the read's error.
    asio::awaitable<bool> read_header_by_deadline(std::shared_ptr<beast::tcp_stream> stream,
                                                  beast::flat_buffer& buffer, RequestParser& parser,
                                                  beast::error_code& ec) {
        struct Deadline {
            // False once the read is over: a late expiry must not cancel what follows.
            bool armed = true;
            bool passed = false;
        };
        auto deadline = std::make_shared<Deadline>();
        auto timer = std::make_shared<asio::steady_timer>(
            co_await asio::this_coro::executor, std::chrono::milliseconds(std::max(1, config_.header_timeout_ms)));
        // The header read is a composed operation: a cancel that lands between two of its
        // reads cancels nothing, so once the deadline passed the cancel repeats every 50 ms
        // until the read is over.
        struct Canceller {
            std::shared_ptr<Deadline> deadline;
            std::shared_ptr<asio::steady_timer> timer;
            std::shared_ptr<beast::tcp_stream> stream;
            void operator()(const beast::error_code& e) const {
                if (e || !deadline->armed) return;
                deadline->passed = true;
                beast::error_code ignored;
                stream->socket().cancel(ignored);
                timer->expires_after(std::chrono::milliseconds(50));
                timer->async_wait(*this);
            }
        };
        timer->async_wait(Canceller{deadline, timer, stream});
        stream->expires_never();
        co_await http::async_read_header(*stream, buffer, parser,
                                         asio::redirect_error(asio::use_awaitable, ec));
        deadline->armed = false;
        timer->cancel();
        co_return ec && deadline->passed;
    }

    asio::awaitable<RequestRead> read_request(std::shared_ptr<beast::tcp_stream> stream,
                                              beast::flat_buffer& buffer, RequestParser& parser,
                                              bool first_request) {
        beast::error_code ec;
        // Between keep-alive requests a connection may idle; the header deadline
        // starts with the next request's first byte (a new connection's at accept).
        if (!first_request && buffer.size() == 0) {
            stream->expires_after(std::chrono::seconds(config_.idle_timeout_s));
            const size_t n = co_await stream->async_read_some(
                buffer.prepare(4096), asio::redirect_error(asio::use_awaitable, ec));
            if (ec) co_return client_gone();
            buffer.commit(n);
        }
        const bool timed_out = co_await read_header_by_deadline(stream, buffer, parser, ec);
        if (timed_out) {
            if (buffer.size() == 0 && !parser.got_some())
                co_return client_gone();  // never said a word
            co_return refused(408,
                              "the request header did not arrive within " +
                                  std::to_string(config_.header_timeout_ms) +
                                  " ms; send the whole header at once",
                              "request_timeout");
        }
        // A Content-Length over the limit fails the header read already.
        if (ec == http::error::body_limit) co_return body_over_limit();
        if (ec) co_return unreadable(ec, config_);
        if (auto bad = transfer_coding_error(parser)) co_return std::move(*bad);
        if (parser.is_done()) co_return RequestRead{};
        stream->expires_after(std::chrono::seconds(config_.idle_timeout_s));
        co_await http::async_read(*stream, buffer, parser,
                                  asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::body_limit) co_return body_over_limit();
        if (ec) co_return unreadable(ec, config_);
        co_return RequestRead{};
    }

    // Stops sending and drops what the client still sends (bounded), so the
    // answer to a request left unread is not destroyed by a reset on close.
    static asio::awaitable<void> linger(beast::tcp_stream& stream) {
        beast::error_code ec;
        stream.socket().shutdown(tcp::socket::shutdown_send, ec);
        stream.expires_after(kLingerTime);
        char sink[4096];
        size_t dropped = 0;
        while (!ec && dropped < kLingerBytes)
            dropped += co_await stream.async_read_some(
                asio::buffer(sink), asio::redirect_error(asio::use_awaitable, ec));
    }

    asio::awaitable<void> session(std::shared_ptr<beast::tcp_stream> stream) {
        beast::flat_buffer buffer;
        bool unread_input = false;  // closing with bytes of a request not read: linger first
        for (bool first = true;; first = false) {
            RequestParser parser;
            parser.body_limit(config_.max_body_bytes);
            parser.header_limit(
                static_cast<std::uint32_t>(std::min<size_t>(config_.max_header_bytes, UINT32_MAX)));
            const RequestRead got = co_await read_request(stream, buffer, parser, first);
            if (got.gone || stopped_.load()) break;
            if (got.status != 0) {
                co_await write_full(*stream, got.status, "application/json", {},
                                    error_body(got.message, got.code), 11, false);
                unread_input = true;
                break;
            }
            HttpRequest req = to_request(parser.get());
            req.body_too_large = got.too_large;
            if (got.too_large) req.body.clear();
            const unsigned version = parser.get().version();
            const bool keep_alive = parser.get().keep_alive() && !got.too_large;

            active_.fetch_add(1);
            HttpResponse res;
            try {
                res = handler_(req);
            } catch (const std::exception& e) {
                res = internal_error();
            }
            if (res.deferred) res = co_await run_deferred(std::move(res.deferred));
            bool ok;
            if (res.async)
                ok = co_await write_async(stream, res, version, keep_alive);
            else
                ok = co_await write_full(*stream, res.status, res.content_type, res.headers, std::move(res.body),
                                         version, keep_alive);
            active_.fetch_sub(1);
            unread_input = got.too_large;
            if (!ok || !keep_alive) break;
        }
        beast::error_code ec;
        if (unread_input && !stopped_.load()) co_await linger(*stream);
        stream->socket().shutdown(tcp::socket::shutdown_send, ec);
        stream->socket().close(ec);  // now, not when the watcher lets go of the stream: the count is of descriptors
        connections_.fetch_sub(1);
        asio::post(accept_strand_, [this] { slot_free_.cancel(); });
    }

    HttpServerConfig config_;
    HttpHandler handler_;
    std::unique_ptr<BlockingPool> own_blocking_;  // when the config gives none
    BlockingPool* blocking_ = nullptr;
    std::mutex deferred_mu_;
    std::condition_variable deferred_cv_;
    size_t deferred_running_ = 0;  // posted to the blocking pool and not finished
    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    std::vector<std::thread> threads_;
    asio::strand<asio::io_context::executor_type> accept_strand_;
    asio::steady_timer slot_free_;          // the accept loop waits on it at the connection cap
    std::atomic<size_t> connections_{0};    // accepted and not yet closed
    std::atomic<size_t> active_{0};
    std::atomic<bool> stopped_{false};
    uint16_t port_ = 0;
    std::mutex bodies_mu_;
    std::set<std::shared_ptr<AsyncBody>> bodies_;
};

}  // namespace

size_t connections_for_open_file_limit(size_t open_file_limit) {
    const size_t kept = std::max<size_t>(48, open_file_limit / 16);
    return open_file_limit > kept ? open_file_limit - kept : 1;
}

Result<std::unique_ptr<HttpServer>> HttpServer::start(const HttpServerConfig& config, HttpHandler handler) {
    auto server = std::make_unique<HttpServerImpl>(config, std::move(handler));
    if (auto s = server->listen(); !s) return s.error();
    return std::unique_ptr<HttpServer>(std::move(server));
}

}  // namespace assistd::serve
