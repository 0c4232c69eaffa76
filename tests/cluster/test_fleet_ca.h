#pragma once
// A throwaway fleet CA in a temporary directory, and the certificate files of
// the nodes it certifies: tests run peers over mutual TLS, as production does.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "cluster/peer_certs.h"
#include "cluster/peer_tls.h"

namespace assistd::cluster {

class TestFleetCa {
  public:
    explicit TestFleetCa(const std::string& label = "fleet") {
        static std::atomic<int> serial{0};
        dir_ = std::filesystem::temp_directory_path() /
               ("assistd-ca-" + label + "-" + std::to_string(::getpid()) + "-" +
                std::to_string(serial++));
        std::filesystem::remove_all(dir_);
        auto ca = make_peer_ca("assistd test CA " + label, 2);
        if (!ca.ok()) throw std::runtime_error(ca.error().message);
        ca_ = *ca;
    }
    ~TestFleetCa() {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    TestFleetCa(const TestFleetCa&) = delete;
    TestFleetCa& operator=(const TestFleetCa&) = delete;

    // Certificate files for `node_name` (as --node-id takes it), signed by this CA.
    PeerTlsFiles issue(const std::string& node_name) const {
        auto cert = make_peer_certificate(ca_, node_name, 2);
        if (!cert.ok()) throw std::runtime_error(cert.error().message);
        const std::string dir = (dir_ / node_name).string();
        if (auto st = write_peer_credentials(dir, "node", ca_, *cert); !st.ok())
            throw std::runtime_error(st.error().message);
        return {dir + "/node.pem", dir + "/node-key.pem", dir + "/ca.pem"};
    }
    const PemCredentials& ca() const { return ca_; }
    const std::filesystem::path& dir() const { return dir_; }

  private:
    std::filesystem::path dir_;
    PemCredentials ca_;
};

}  // namespace assistd::cluster
