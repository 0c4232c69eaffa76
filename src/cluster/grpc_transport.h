#pragma once
// The Transport over gRPC: a server receiving frames on bidirectional
// streams, and one outgoing stream per peer address, each fed by a bounded
// queue and its own thread (reconnecting with backoff). gRPC and protobuf
// headers stay inside grpc_transport.cpp.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cluster/transport.h"
#include "common/result.h"

namespace assistd::cluster {

struct GrpcTransportOptions {
    std::string listen_address = "0.0.0.0:7001";  // host:port; port 0 picks a free one
    size_t max_queued_frames = 4096;              // per peer; beyond it new frames are dropped
};

class GrpcTransport final : public Transport {
  public:
    using FrameHandler = std::function<void(std::string_view frame)>;

    // Starts listening; frames are handed to the handler set with set_handler
    // (dropped until then), on gRPC's threads.
    static Result<std::unique_ptr<GrpcTransport>> start(const GrpcTransportOptions& options);
    ~GrpcTransport() override;

    void set_handler(FrameHandler handler);
    void send(const std::string& address, std::string frame) override;
    int port() const;  // the port actually bound
    uint64_t frames_dropped() const;

    struct Impl;

  private:
    explicit GrpcTransport(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace assistd::cluster
