// LocalFleet: real `assistd serve` processes on loopback (see local_fleet.h).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cluster/peer_certs.h"
#include "local_fleet.h"

namespace assistd::e2e {
namespace fs = std::filesystem;

namespace {

// Free loopback ports, held open together so no two are the same.
std::vector<uint16_t> free_ports(size_t count) {
    std::vector<int> fds;
    std::vector<uint16_t> ports;
    for (size_t i = 0; i < count; ++i) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            if (fd >= 0) ::close(fd);
            continue;
        }
        socklen_t len = sizeof addr;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
        fds.push_back(fd);
        ports.push_back(ntohs(addr.sin_port));
    }
    for (int fd : fds) ::close(fd);
    return ports;
}

}  // namespace

const std::string& model_path() {
    // ASSISTD_E2E_MODEL: another model for a benchmark run (bench/failover_kv.sh).
    static const std::string path = [] {
        const char* other = std::getenv("ASSISTD_E2E_MODEL");
        return other && *other ? std::string(other) : std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";
    }();
    return path;
}

bool model_available() {
    return fs::exists(model_path());
}

LocalFleet::LocalFleet(int nodes, std::vector<std::string> extra_args)
    : extra_args_(std::move(extra_args)) {
    std::string pattern = (fs::temp_directory_path() / "assistd-fleet-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    root_ = pattern;
    const auto ports = free_ports(static_cast<size_t>(nodes) * 2);
    if (ports.size() != static_cast<size_t>(nodes) * 2)
        throw std::runtime_error("no free loopback ports");
    nodes_.resize(static_cast<size_t>(nodes));
    std::vector<std::string> names;
    for (int i = 0; i < nodes; ++i) {
        auto& n = nodes_[static_cast<size_t>(i)];
        n.http_port = ports[static_cast<size_t>(i) * 2];
        n.peer_port = ports[static_cast<size_t>(i) * 2 + 1];
        n.state_dir = root_ / ("node" + std::to_string(i));
        n.log = root_ / ("node" + std::to_string(i) + ".log");
        names.push_back("node" + std::to_string(i));
        if (!peers_.empty()) peers_ += ',';
        peers_ += "127.0.0.1:" + std::to_string(n.peer_port);
    }
    // Peers authenticate each other as in production: a CA of this fleet's own.
    auto tls = cluster::make_throwaway_fleet((root_ / "certs").string(), names, 2);
    if (!tls.ok()) throw std::runtime_error(tls.error().message);
    tls_ = *tls;
}

LocalFleet::~LocalFleet() {
    for (int i = 0; i < size(); ++i)
        if (running(i)) kill9(i);
    std::error_code ec;
    fs::remove_all(root_, ec);
}

void LocalFleet::start(int i) {
    auto& n = nodes_[static_cast<size_t>(i)];
    const std::string peer = "127.0.0.1:" + std::to_string(n.peer_port);
    std::vector<std::string> argv = {ASSISTD_BINARY,     "serve",
                                     "--model",          model_path(),
                                     "--threads",        "1",
                                     "--host",           "127.0.0.1",
                                     "--port",           std::to_string(n.http_port),
                                     "--state-dir",      n.state_dir.string(),
                                     "--peers",          peers_,
                                     "--listen-peer",    peer,
                                     "--advertise-peer", peer,
                                     "--peer-tls-cert",  tls_[static_cast<size_t>(i)].cert_path,
                                     "--peer-tls-key",   tls_[static_cast<size_t>(i)].key_path,
                                     "--peer-tls-ca",    tls_[static_cast<size_t>(i)].ca_path};
    if (std::find(extra_args_.begin(), extra_args_.end(), "--io-threads") == extra_args_.end())
        argv.insert(argv.end(), {"--io-threads", "2"});
    for (std::string a : extra_args_) {
        // "@STATE@" is the node's own state directory (a per-node path in flags every node gets).
        if (const size_t at = a.find("@STATE@"); at != std::string::npos) a.replace(at, 7, n.state_dir.string());
        argv.push_back(std::move(a));
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int fd = ::open(n.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(a.data());
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    n.pid = pid;
}

bool LocalFleet::wait_ready(int i, std::chrono::milliseconds timeout) {
    auto& n = nodes_[static_cast<size_t>(i)];
    return eventually(
               [&] {
                   if (n.pid <= 0) return false;
                   int status = 0;
                   if (::waitpid(n.pid, &status, WNOHANG) == n.pid) {
                       n.pid = -1;  // died on start: the log says why
                       return true;
                   }
                   return http(n.http_port, "GET", "/readyz").status == 200;
               },
               timeout) &&
           n.pid > 0;
}

bool LocalFleet::wait_all_ready(std::chrono::milliseconds timeout) {
    for (int i = 0; i < size(); ++i)
        if (!wait_ready(i, timeout)) return false;
    return true;
}

void LocalFleet::kill9(int i) {
    auto& n = nodes_[static_cast<size_t>(i)];
    if (n.pid <= 0) return;
    ::kill(n.pid, SIGKILL);
    int status = 0;
    ::waitpid(n.pid, &status, 0);
    n.pid = -1;
}

void LocalFleet::terminate(int i) {
    auto& n = nodes_[static_cast<size_t>(i)];
    if (n.pid > 0) ::kill(n.pid, SIGTERM);
}

int LocalFleet::wait_exit(int i, std::chrono::milliseconds timeout) {
    auto& n = nodes_[static_cast<size_t>(i)];
    if (n.pid <= 0) return -1;
    int status = 0;
    const bool exited =
        eventually([&] { return ::waitpid(n.pid, &status, WNOHANG) == n.pid; }, timeout);
    if (!exited) return -1;
    n.pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string LocalFleet::log(int i) const {
    std::ifstream in(nodes_[static_cast<size_t>(i)].log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string LocalFleet::logs() const {
    std::string out;
    for (int i = 0; i < size(); ++i) out += "--- node " + std::to_string(i) + " ---\n" + log(i);
    return out;
}

std::string LocalFleet::log_tails(size_t bytes) const {
    std::string out;
    for (int i = 0; i < size(); ++i) {
        const std::string whole = log(i);
        out += "--- node " + std::to_string(i) + " (last " + std::to_string(bytes) + " bytes of its log) ---\n";
        out += whole.substr(whole.size() > bytes ? whole.size() - bytes : 0);
        out += "\n";
    }
    return out;
}

Reply http(uint16_t port, const std::string& method, const std::string& path,
           const std::string& body) {
    using namespace serve::test_support;
    Reply r;  // status 0: no answer (refused, reset, or cut short)
    const int fd = connect_loopback(port);
    if (fd < 0) return r;
    send_all(fd, request_text(method, path, body, true));
    const std::string raw = read_to_eof(fd);
    ::close(fd);
    if (parse_reply(raw, r) == 0) r = Reply{};
    return r;
}

}  // namespace assistd::e2e
