#pragma once
// A fleet of real `assistd serve` processes on loopback for the e2e tests:
// free HTTP and peer ports, one state directory per node under a temporary
// root, each node's stderr in a log file there; start, SIGKILL, SIGTERM and
// restart nodes; the HTTP client of tests/serve. Peers use mutual TLS with a
// CA made for the fleet (node i is "node<i>"). Every wait is bounded.
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cluster/peer_tls.h"
#include "http_test_client.h"

namespace assistd::e2e {

using serve::test_support::Reply;

struct FleetNodeProcess {
    pid_t pid = -1;  // -1: not running
    uint16_t http_port = 0;
    uint16_t peer_port = 0;
    std::filesystem::path state_dir;
    std::filesystem::path log;
};

class LocalFleet {
  public:
    // Picks ports and directories for `nodes` nodes; starts none. In
    // `extra_args`, "@STATE@" stands for each node's state directory.
    LocalFleet(int nodes, std::vector<std::string> extra_args = {});
    ~LocalFleet();  // SIGKILLs what still runs, removes the directories
    LocalFleet(const LocalFleet&) = delete;
    LocalFleet& operator=(const LocalFleet&) = delete;

    void start(int i);
    void start_all() {
        for (int i = 0; i < size(); ++i) start(i);
    }
    // Polls /readyz until 200 (false on timeout or when the process died).
    bool wait_ready(int i, std::chrono::milliseconds timeout = std::chrono::seconds(30));
    bool wait_all_ready(std::chrono::milliseconds timeout = std::chrono::seconds(30));
    void kill9(int i);      // SIGKILL and reap
    void terminate(int i);  // SIGTERM, not reaped
    // Waits for the process to exit; its exit status, or -1 on timeout / not an exit.
    int wait_exit(int i, std::chrono::milliseconds timeout);
    bool running(int i) const { return nodes_[i].pid > 0; }

    int size() const { return static_cast<int>(nodes_.size()); }
    const FleetNodeProcess& node(int i) const { return nodes_[i]; }
    uint16_t port(int i) const { return nodes_[i].http_port; }
    std::string log(int i) const;  // the node's stderr so far
    std::string logs() const;      // every node's, for failure messages
    // The last `bytes` of every node's log: the whole of them would drown a test's failures.
    std::string log_tails(size_t bytes) const;

  private:
    std::filesystem::path root_;
    std::vector<FleetNodeProcess> nodes_;
    std::vector<std::string> extra_args_;
    std::string peers_;
    std::vector<cluster::PeerTlsFiles> tls_;  // node i's certificate files (node name "node<i>")
};

bool model_available();
const std::string& model_path();

// One HTTP exchange with a node (connection closed after it).
Reply http(uint16_t port, const std::string& method, const std::string& path,
           const std::string& body = "");

// Polls `done` every 10 ms until it holds or the timeout passes.
template <typename Fn>
bool eventually(Fn done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
}

}  // namespace assistd::e2e
