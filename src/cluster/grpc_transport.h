#pragma once
// The Transport over gRPC: a server receiving frames on bidirectional
// streams, and one outgoing stream per peer address, each fed by a bounded
// queue and its own thread (reconnecting with backoff). Peers authenticate
// each other with mutual TLS (peer_tls.h) unless the transport is explicitly
// insecure; every inbound frame comes with the origin the connection proved.
// gRPC and protobuf headers stay inside grpc_transport.cpp.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/peer_tls.h"
#include "cluster/transport.h"
#include "common/result.h"

namespace assistd::cluster {

struct GrpcTransportOptions {
    std::string listen_address = "0.0.0.0:7001";  // host:port; port 0 picks a free one
    size_t max_queued_frames = 4096;              // per peer; beyond it new frames are dropped
    // Mutual TLS: this node's certificate and key and the fleet's CA. Required
    // unless `insecure` (plaintext, any sender: a trusted test network only).
    PeerTlsFiles tls;
    bool insecure = false;
    unsigned tls_refresh_s = 60;  // the files are re-read this often (rotation without a restart)
    // Outgoing streams, one per peer address (each a thread and a channel):
    // at the cap, the stream idle longest goes if nothing was sent on it for
    // link_idle_ms (a peer that left: its next life has another address),
    // else frames for a further address are dropped and counted.
    size_t max_links = 256;
    int64_t link_idle_ms = 30000;
};

class GrpcTransport final : public Transport {
  public:
    using FrameHandler = std::function<void(std::string_view frame, const FrameOrigin& origin)>;

    // Starts listening; frames are handed to the handler set with set_handler
    // (dropped until then), on gRPC's threads.
    static Result<std::unique_ptr<GrpcTransport>> start(const GrpcTransportOptions& options);
    ~GrpcTransport() override;

    void set_handler(FrameHandler handler);
    void send(const std::string& address, std::string frame) override;
    bool send_bulk(const std::string& address, std::string frame, size_t max_queued_bytes) override;
    int port() const;  // the port actually bound
    uint64_t frames_dropped() const;
    size_t links() const;            // outgoing streams open (at most max_links)
    uint64_t links_refused() const;  // frames dropped because max_links streams were open
    bool authenticated() const;      // mutual TLS (not insecure)

    struct Impl;

  private:
    explicit GrpcTransport(std::unique_ptr<Impl> impl);
    // Queues on the outbox `key` (the address, or its bulk stream's key) that streams to `address`.
    bool enqueue(const std::string& key, const std::string& address, std::string frame, size_t max_queued_bytes);
    std::unique_ptr<Impl> impl_;
};

}  // namespace assistd::cluster
