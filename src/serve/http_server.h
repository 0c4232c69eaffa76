#pragma once
// A small HTTP/1.1 server (keep-alive, chunked streaming) behind a narrow
// interface: no Beast or Asio in this header, so only http_server.cpp pays
// their compile time. I/O runs on the server's own threads; a handler must
// never block: long work (generation) returns an AsyncBody the server polls
// when its waker fires, and work that waits (a session store's fsyncs and
// replica acks) returns `deferred`, which the server runs on its blocking
// pool while the request's coroutine is suspended.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace assistd::serve {

class BlockingPool;

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
    std::string method;
    std::string target;  // path and query
    HttpHeaders headers;
    std::string body;
    bool body_too_large = false;  // the body was over the limit and dropped: answer 413
    // Case-insensitive; empty when absent.
    std::string_view header(std::string_view name) const;
};

// The body of a response that is produced over time (a generation).
class AsyncBody {
public:
    virtual ~AsyncBody() = default;
    // `wake` may be called from any thread when poll() has something new.
    // Once clear_waker() returns it is never called again.
    virtual void set_waker(std::function<void()> wake) = 0;
    virtual void clear_waker() = 0;
    // Non-blocking, on an I/O thread: appends the bytes available now to
    // `out`; returns true when the body is complete.
    virtual bool poll(std::string& out) = 0;
    // The status and extra headers. Consulted once the first bytes (or the
    // end) are available, so a generation that fails before its first token
    // can still answer with an error status.
    virtual int status() const = 0;
    virtual HttpHeaders headers() const { return {}; }
    // The client went away (or the server is stopping).
    virtual void cancel() = 0;
};

struct HttpResponse {
    int status = 200;
    std::string content_type = "application/json";
    HttpHeaders headers;
    std::string body;
    std::shared_ptr<AsyncBody> async;  // set: the body comes from here
    bool stream = false;               // with async: sent chunked as it comes (SSE)
    // Set: the response is not known yet. The server runs this on its
    // blocking pool (never on an I/O thread) and answers with what it returns
    // (which may have an async body; it is not deferred again). Only what it
    // returns is sent: status, headers and body of this one are ignored.
    std::function<HttpResponse()> deferred;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerConfig {
    std::string host = "127.0.0.1";
    uint16_t port = 8080;  // 0: an ephemeral port (see HttpServer::port())
    int io_threads = 1;
    size_t max_body_bytes = size_t{1} << 20;     // a larger body: the handler sees body_too_large
    size_t max_header_bytes = size_t{64} << 10;  // request line and fields; larger: 431 and close
    int idle_timeout_s = 60;  // keep-alive connections idle this long between requests are closed
    // A request's header must be complete this long after its first byte (a new
    // connection's first request: after accept), else 408 and close: a client
    // that trickles its header (slowloris) holds a connection no longer.
    int header_timeout_ms = 10'000;
    // Open connections at most (0: no cap). At the cap the server stops accepting
    // until one closes (the listen backlog holds new clients meanwhile), so
    // sockets never take the descriptors the rest of the process needs.
    size_t max_connections = 0;
    // Runs deferred responses; null: a pool of the server's own with 4 threads.
    BlockingPool* blocking = nullptr;
};

// The connections `assistd serve` allows under an open-file limit: the limit
// less what it keeps for everything else (model, session store, logs, files
// served, the sanitizers' runtime): max(48, limit / 16) descriptors.
size_t connections_for_open_file_limit(size_t open_file_limit);

class HttpServer {
public:
    // Binds and starts the I/O threads; errors say what could not be bound.
    static Result<std::unique_ptr<HttpServer>> start(const HttpServerConfig& config, HttpHandler handler);
    virtual ~HttpServer() = default;
    virtual uint16_t port() const = 0;
    // Requests read and not yet fully answered.
    virtual size_t active_requests() const = 0;
    // Stops accepting, closes connections, joins the I/O threads.
    virtual void stop() = 0;
};

}  // namespace assistd::serve
