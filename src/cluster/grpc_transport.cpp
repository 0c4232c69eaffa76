#include "cluster/grpc_transport.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_certificate_verifier.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "cluster/peer_address.h"
#include "peer.grpc.pb.h"

namespace assistd::cluster {
namespace pb = assistd::cluster::v1;

namespace {

// Partitions heal fast (docs/cluster.md, "Partitions"). gRPC's defaults are
// made for clients of remote services: a connect attempt may hang for 20 s
// (a silent partition drops the SYNs), reconnects back off from 1 s up to
// 120 s, and a dead connection is only noticed when TCP gives up. Between
// peers of a fleet a reconnect should follow a heal within about a second:
// dead connections are found by keepalive pings, a connect attempt gives up
// after kConnectTimeoutMs (one SYN: TCP resends it only after 1 s; a LAN
// handshake takes milliseconds) and the next one starts at most
// kMaxReconnectBackoffMs later. The partition test measured the heal to
// convergence at 0.6-1.2 s with a 1 s connect timeout and 500 ms backoff,
// 0.4-1.1 s with 500/500, 0.46-0.75 s with 500/250 (3.2 s with gRPC's
// defaults).
constexpr int kKeepaliveTimeMs = 1000;
constexpr int kKeepaliveTimeoutMs = 2000;
constexpr int kConnectTimeoutMs = 500;
constexpr int kInitialReconnectBackoffMs = 100;
constexpr int kMaxReconnectBackoffMs = 250;

grpc::ChannelArguments channel_arguments() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    // gRPC takes the minimum reconnect backoff as the shortest connect timeout.
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, kConnectTimeoutMs);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kInitialReconnectBackoffMs);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kMaxReconnectBackoffMs);
    // One channel per peer address of its own, so no other channel's backoff applies.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return args;
}

// gRPC's own log lines go to ours. A peer's TLS client names the address it
// dials as the server name (SNI) and gRPC logs each as an error when the
// certificate does not list it; peers are named by certificate, not by host,
// so that line says nothing.
void log_grpc(gpr_log_func_args* args) {
    const std::string_view text = args->message ? args->message : "";
    if (text.find("No match found for server name") != std::string_view::npos) return;
    if (args->severity == GPR_LOG_SEVERITY_ERROR) {
        // A peer that fails every handshake retries several times a second: a few lines a minute.
        static std::atomic<int64_t> window{0};
        static std::atomic<int> in_window{0};
        const int64_t minute = std::chrono::duration_cast<std::chrono::minutes>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
        if (window.exchange(minute) != minute) in_window = 0;
        if (in_window++ < 10) spdlog::warn("grpc: {}", text);
    } else if (args->severity == GPR_LOG_SEVERITY_INFO) {
        spdlog::debug("grpc: {}", text);
    } else {
        spdlog::trace("grpc: {}", text);
    }
}

// The handshake's own check beyond the chain to the CA: the peer's
// certificate names a node (peer_tls.h). Host names are not checked: peers
// are reached by IP and named by their certificates.
class NodeCertificateVerifier final : public grpc::experimental::ExternalCertificateVerifier {
  public:
    bool Verify(grpc::experimental::TlsCustomVerificationCheckRequest* request,
                std::function<void(grpc::Status)>, grpc::Status* sync_status) override {
        const auto pem = request->peer_cert();
        auto name = node_name_of_certificate(std::string_view(pem.data(), pem.size()));
        *sync_status = name.ok() ? grpc::Status::OK
                                 : grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                                "peer certificate: " + name.error().message);
        return true;
    }
    void Cancel(grpc::experimental::TlsCustomVerificationCheckRequest*) override {}
};

// "ipv4:10.0.0.7:41234", "ipv6:[::1]:41234" (or %5B::1%5D) -> "10.0.0.7", "::1".
std::string peer_host(const std::string& peer) {
    std::string rest = peer.substr(peer.find(':') + 1);
    for (const auto& [from, to] : {std::pair{"%5B", "["}, std::pair{"%5D", "]"}}) {
        for (size_t at; (at = rest.find(from)) != std::string::npos;) rest.replace(at, 3, to);
    }
    std::string host = address_host(rest);
    if (host.rfind("::ffff:", 0) == 0 && host.find('.') != std::string::npos)
        host = host.substr(7);  // an IPv4 peer on a dual-stack socket
    return host;
}

// Who the stream's peer proved to be: the node its certificate names (TLS), and its IP.
FrameOrigin stream_origin(const grpc::ServerContext& context, bool authenticated) {
    FrameOrigin origin;
    origin.host = peer_host(context.peer());
    if (!authenticated) return origin;
    const auto auth = context.auth_context();
    if (!auth) return origin;
    for (const auto& pem : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
        auto name = node_name_of_certificate(std::string_view(pem.data(), pem.size()));
        if (!name.ok()) continue;
        if (auto id = node_id_from_name(*name); id.ok()) origin.node = *id;
    }
    return origin;
}

}  // namespace

struct GrpcTransport::Impl {
    // Inbound: every stream a peer opens; each frame goes to the handler.
    class Service final : public pb::Peer::Service {
      public:
        explicit Service(Impl& impl) : impl_(impl) {}
        grpc::Status Stream(grpc::ServerContext* context,
                            grpc::ServerReaderWriter<pb::Frame, pb::Frame>* stream) override {
            const bool tls = !impl_.options.insecure;
            const FrameOrigin origin = stream_origin(*context, tls);
            if (tls && !origin.node) {
                // The handshake's verifier lets no such peer in; refuse rather than trust it.
                return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                                    "the peer certificate names no node");
            }
            pb::Frame frame;
            while (stream->Read(&frame)) {
                FrameHandler handler;
                {
                    std::lock_guard<std::mutex> lock(impl_.handler_mu);
                    handler = impl_.handler;
                }
                if (handler) handler(frame.payload(), origin);
            }
            return grpc::Status::OK;
        }

      private:
        Impl& impl_;
    };

    // Outbound: one stream per peer address, written by its own thread.
    struct Outbox {
        std::string address;
        std::mutex mu;
        std::condition_variable cv;
        std::deque<std::string> queue;
        size_t queued_bytes = 0;
        bool stopping = false;
        grpc::ClientContext* context = nullptr;  // the live stream's, to cancel it on shutdown
        std::thread thread;
        std::atomic<int64_t> last_send_ms{0};  // steady clock
        std::atomic<bool> exited{false};       // run() returned: the thread joins at once
    };

    static int64_t steady_ms() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
    }

    // Asks an outbox's thread to end (it is joined later, from `retired`). Under o.mu.
    static void stop_outbox(Outbox& o) {
        o.stopping = true;
        if (o.context) o.context->TryCancel();
        o.cv.notify_all();
    }

    GrpcTransportOptions options;
    Service service{*this};
    std::unique_ptr<grpc::Server> server;
    int port = 0;
    std::mutex handler_mu;
    FrameHandler handler;
    mutable std::mutex outbox_mu;
    std::map<std::string, std::unique_ptr<Outbox>> outboxes;
    // Outboxes of addresses nobody sent to for link_idle_ms, ended to make room
    // (peers that went away: a pod's next life has another IP). Under outbox_mu.
    std::vector<std::unique_ptr<Outbox>> retired;
    bool closed = false;  // under outbox_mu: no new outboxes once shutdown began

    // At the cap: ends the outbox idle longest, if one is idle long enough. Under outbox_mu.
    bool retire_idle_outbox() {
        for (auto it = retired.begin(); it != retired.end();) {  // join those that are done
            if ((*it)->exited.load()) {
                (*it)->thread.join();
                it = retired.erase(it);
            } else {
                ++it;
            }
        }
        const int64_t now = steady_ms();
        auto idlest = outboxes.end();
        for (auto it = outboxes.begin(); it != outboxes.end(); ++it) {
            if (!it->second) continue;
            if (idlest == outboxes.end() ||
                it->second->last_send_ms.load() < idlest->second->last_send_ms.load())
                idlest = it;
        }
        if (idlest == outboxes.end() ||
            now - idlest->second->last_send_ms.load() < static_cast<int64_t>(options.link_idle_ms))
            return false;
        {
            std::lock_guard<std::mutex> lock(idlest->second->mu);
            stop_outbox(*idlest->second);
        }
        retired.push_back(std::move(idlest->second));
        outboxes.erase(idlest);
        return true;
    }
    std::atomic<uint64_t> dropped{0};
    std::atomic<uint64_t> links_refused{0};
    std::shared_ptr<grpc::experimental::CertificateProviderInterface> certificates;
    std::shared_ptr<grpc::experimental::CertificateVerifier> verifier;

    std::shared_ptr<grpc::ChannelCredentials> channel_credentials() const {
        if (options.insecure) return grpc::InsecureChannelCredentials();
        grpc::experimental::TlsChannelCredentialsOptions tls;
        tls.set_certificate_provider(certificates);
        tls.watch_root_certs();
        tls.watch_identity_key_cert_pairs();
        tls.set_verify_server_certs(true);
        tls.set_check_call_host(false);
        tls.set_certificate_verifier(verifier);
        return grpc::experimental::TlsCredentials(tls);
    }

    std::shared_ptr<grpc::ServerCredentials> server_credentials() const {
        if (options.insecure) return grpc::InsecureServerCredentials();
        grpc::experimental::TlsServerCredentialsOptions tls(certificates);
        tls.watch_root_certs();
        tls.watch_identity_key_cert_pairs();
        tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
        tls.set_check_call_host(false);
        tls.set_certificate_verifier(verifier);
        return grpc::experimental::TlsServerCredentials(tls);
    }

    void run(Outbox& o) {
        auto channel =
            grpc::CreateCustomChannel(o.address, channel_credentials(), channel_arguments());
        auto stub = pb::Peer::NewStub(channel);
        int backoff_ms = 50;
        while (true) {
            {
                std::unique_lock<std::mutex> lock(o.mu);
                o.cv.wait(lock, [&] { return o.stopping || !o.queue.empty(); });
                if (o.stopping) return;
            }
            grpc::ClientContext context;
            // Wait for the channel to (re)connect instead of failing at once
            // while it backs off: the stream starts the moment the peer is
            // reachable again, not at this loop's next retry.
            context.set_wait_for_ready(true);
            {
                std::lock_guard<std::mutex> lock(o.mu);
                if (o.stopping) return;  // stopped before there was a stream to cancel
                o.context = &context;
            }
            auto stream = stub->Stream(&context);
            bool ok = true;
            bool delivered = false;  // a frame went out on this stream: the peer was reachable
            while (ok) {
                pb::Frame frame;
                {
                    std::unique_lock<std::mutex> lock(o.mu);
                    o.cv.wait(lock, [&] { return o.stopping || !o.queue.empty(); });
                    if (o.stopping) break;
                    o.queued_bytes -= o.queue.front().size();
                    frame.set_payload(std::move(o.queue.front()));
                    o.queue.pop_front();
                }
                ok = stream->Write(frame);  // blocks while the peer's flow-control window is full
                delivered = delivered || ok;
            }
            {
                std::lock_guard<std::mutex> lock(o.mu);
                if (o.stopping) context.TryCancel();
            }
            stream->WritesDone();
            (void)stream->Finish();
            bool stopping;
            {
                std::lock_guard<std::mutex> lock(o.mu);
                o.context = nullptr;
                stopping = o.stopping;
            }
            if (stopping) return;
            // A broken stream: frames written into it may be lost (the replicator resends); back
            // off and reconnect.
            std::unique_lock<std::mutex> lock(o.mu);
            o.cv.wait_for(lock, std::chrono::milliseconds(backoff_ms), [&] { return o.stopping; });
            backoff_ms = delivered ? 50 : std::min(backoff_ms * 2, 1000);
        }
    }
};

GrpcTransport::GrpcTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<GrpcTransport>> GrpcTransport::start(const GrpcTransportOptions& options) {
    if (options.listen_address.empty() || options.listen_address.find(':') == std::string::npos) {
        return make_error(ErrorCode::kInvalidArgument,
                          "peer listen address '" + options.listen_address + "' must be host:port");
    }
    if (options.max_queued_frames == 0) {
        return make_error(ErrorCode::kInvalidArgument,
                          "peer transport: max_queued_frames must be at least 1");
    }
    if (options.max_links == 0) {
        return make_error(ErrorCode::kInvalidArgument,
                          "peer transport: max_links must be at least 1");
    }
    static std::once_flag log_once;
    std::call_once(log_once, [] { gpr_set_log_function(log_grpc); });
    auto impl = std::make_unique<Impl>();
    impl->options = options;
    if (!options.insecure) {
        if (auto name = check_peer_tls_files(options.tls); !name.ok()) return name.error();
        impl->certificates =
            std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
                options.tls.key_path, options.tls.cert_path, options.tls.ca_path,
                std::max(1u, options.tls_refresh_s));
        impl->verifier =
            grpc::experimental::ExternalCertificateVerifier::Create<NodeCertificateVerifier>();
    }
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.listen_address, impl->server_credentials(), &impl->port);
    builder.RegisterService(&impl->service);
    builder.SetMaxReceiveMessageSize(64 << 20);
    // Peers ping every kKeepaliveTimeMs on streams that carry data one way
    // only: accept that (by default a server answers frequent pings with
    // GOAWAY), and ping back so a dead inbound stream frees its thread.
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                               kKeepaliveTimeMs / 2);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
    impl->server = builder.BuildAndStart();
    if (!impl->server || impl->port == 0) {
        return make_error(ErrorCode::kIo, "cannot listen for peers on " + options.listen_address +
                                              " (address in use, or not a local address?)");
    }
    return std::unique_ptr<GrpcTransport>(new GrpcTransport(std::move(impl)));
}

GrpcTransport::~GrpcTransport() {
    set_handler(nullptr);
    {
        std::lock_guard<std::mutex> lock(impl_->outbox_mu);
        impl_->closed = true;
    }
    // Inbound first: once Wait() returns no handler runs, so nothing sends any more.
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    impl_->server->Wait();
    std::map<std::string, std::unique_ptr<Impl::Outbox>> outboxes;
    std::vector<std::unique_ptr<Impl::Outbox>> retired;
    {
        std::lock_guard<std::mutex> lock(impl_->outbox_mu);
        outboxes.swap(impl_->outboxes);
        retired.swap(impl_->retired);
    }
    for (auto& [address, o] : outboxes) {
        std::lock_guard<std::mutex> lock(o->mu);
        Impl::stop_outbox(*o);
    }
    for (auto& [address, o] : outboxes) o->thread.join();
    for (auto& o : retired) o->thread.join();
}

void GrpcTransport::set_handler(FrameHandler handler) {
    std::lock_guard<std::mutex> lock(impl_->handler_mu);
    impl_->handler = std::move(handler);
}

void GrpcTransport::send(const std::string& address, std::string frame) {
    (void)enqueue(address, address, std::move(frame), static_cast<size_t>(-1));
}

bool GrpcTransport::send_bulk(const std::string& address, std::string frame, size_t max_queued_bytes) {
    return enqueue("bulk|" + address, address, std::move(frame), max_queued_bytes);
}

bool GrpcTransport::enqueue(const std::string& key, const std::string& address, std::string frame,
                            size_t max_queued_bytes) {
    Impl::Outbox* o;
    {
        std::lock_guard<std::mutex> lock(impl_->outbox_mu);
        if (impl_->closed) return false;
        auto found = impl_->outboxes.find(key);
        if (found == impl_->outboxes.end()) {
            if (impl_->outboxes.size() >= impl_->options.max_links && !impl_->retire_idle_outbox()) {
                ++impl_->links_refused;  // best effort, as a full queue
                return false;
            }
            found = impl_->outboxes.emplace(key, nullptr).first;
        }
        auto& slot = found->second;
        if (!slot) {
            slot = std::make_unique<Impl::Outbox>();
            slot->address = address;
            Impl* impl = impl_.get();
            Impl::Outbox* raw = slot.get();
            slot->thread = std::thread([impl, raw] {
                impl->run(*raw);
                raw->exited = true;
            });
        }
        o = slot.get();
        o->last_send_ms = Impl::steady_ms();
    }
    {
        std::lock_guard<std::mutex> lock(o->mu);
        if (o->queue.size() >= impl_->options.max_queued_frames ||
            (!o->queue.empty() && o->queued_bytes + frame.size() > max_queued_bytes)) {
            ++impl_->dropped;  // best effort: the replicator resends what is not acknowledged
            return false;
        }
        o->queued_bytes += frame.size();
        o->queue.push_back(std::move(frame));
    }
    o->cv.notify_one();
    return true;
}

int GrpcTransport::port() const {
    return impl_->port;
}

uint64_t GrpcTransport::frames_dropped() const {
    return impl_->dropped.load();
}

size_t GrpcTransport::links() const {
    std::lock_guard<std::mutex> lock(impl_->outbox_mu);
    return impl_->outboxes.size();
}

uint64_t GrpcTransport::links_refused() const {
    return impl_->links_refused.load();
}

bool GrpcTransport::authenticated() const {
    return !impl_->options.insecure;
}

}  // namespace assistd::cluster
