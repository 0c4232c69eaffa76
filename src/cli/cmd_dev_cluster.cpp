// `assistd dev-cluster`: a local fleet for development. Starts N `assistd
// serve` children of this same binary on loopback — HTTP on base-port + i,
// peer replication on base-port + 100 + i, state in <state-root>/node<i>,
// logs in <state-root>/node<i>.log — waits until each is ready, prints how to
// reach them, and forwards SIGINT/SIGTERM to all of them (each drains), then
// waits for them to exit. Arguments after `--` go to every `assistd serve`.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#if ASSISTD_HAVE_CLUSTER
#include "cluster/peer_certs.h"
#endif

namespace assistd::cli {
namespace {

struct DevClusterOptions {
    int nodes = 3;
    std::string model;
    int base_port = 8080;
    std::string state_root;  // empty: a temporary directory, removed on exit
    int threads = 1;
    std::vector<std::string> serve_args;
};

struct Child {
    pid_t pid = -1;
    int http_port = 0;
    int peer_port = 0;
    std::filesystem::path state_dir, log;
    int exit_status = -1;
};

// GET /readyz answered 200 (one short-lived loopback connection).
bool ready(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return false;
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        const char req[] = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if (::send(fd, req, sizeof req - 1, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof req - 1)) {
            char buf[64] = {};
            const ssize_t n = ::recv(fd, buf, sizeof buf - 1, 0);
            ok = n > 12 && std::strncmp(buf, "HTTP/1.1 200", 12) == 0;
        }
    }
    ::close(fd);
    return ok;
}

pid_t spawn(const std::vector<std::string>& argv, const std::filesystem::path& log) {
    const pid_t pid = ::fork();
    if (pid != 0) return pid;
    // The child: its own signal mask (this process blocks the stop signals), output to the log.
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::setpgid(0, 0);  // a terminal's Ctrl-C reaches the parent only, which forwards it
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv("/proc/self/exe", args.data());
    std::fprintf(stderr, "assistd dev-cluster: cannot run /proc/self/exe: %s\n", std::strerror(errno));
    ::_exit(127);
}

// Reaps children that exited; returns how many are still running.
size_t reap(std::vector<Child>& children, bool report) {
    size_t running = 0;
    for (size_t i = 0; i < children.size(); ++i) {
        auto& c = children[i];
        if (c.pid <= 0) continue;
        int status = 0;
        if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
            c.pid = -1;
            c.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            if (report)
                std::fprintf(stderr, "assistd dev-cluster: node %zu exited (status %d); its log: %s\n", i,
                             c.exit_status, c.log.c_str());
        } else {
            ++running;
        }
    }
    return running;
}

// Each node's --peer-tls-* arguments, from a CA made for the fleet under `dir`.
bool peer_tls_args(const std::filesystem::path& dir, const std::vector<std::string>& names,
                   std::vector<std::vector<std::string>>& out) {
#if ASSISTD_HAVE_CLUSTER
    auto tls = cluster::make_throwaway_fleet(dir.string(), names, 30);
    if (!tls.ok()) {
        std::fprintf(stderr, "assistd dev-cluster: cannot make the fleet's certificates: %s\n",
                     tls.error().message.c_str());
        return false;
    }
    for (const auto& f : *tls)
        out.push_back({"--peer-tls-cert", f.cert_path, "--peer-tls-key", f.key_path, "--peer-tls-ca", f.ca_path});
    return true;
#else
    (void)dir;
    (void)names;
    (void)out;
    std::fprintf(stderr, "assistd dev-cluster: this build lacks the gRPC peer transport "
                         "(run scripts/install-deps.sh and rebuild)\n");
    return false;
#endif
}

int run_dev_cluster(const DevClusterOptions& o) {
    if (o.nodes < 1 || o.nodes > 32) {
        std::fprintf(stderr, "assistd dev-cluster: --nodes must be 1..32\n");
        return 2;
    }
    if (o.base_port < 1 || o.base_port + 100 + o.nodes > 65535) {
        std::fprintf(stderr, "assistd dev-cluster: --base-port must leave room for ports up to base + 100 + nodes\n");
        return 2;
    }
    std::error_code ec;
    if (!std::filesystem::is_regular_file(o.model, ec)) {
        std::fprintf(stderr, "assistd dev-cluster: --model %s is not a file\n", o.model.c_str());
        return 2;
    }
    std::filesystem::path root = o.state_root;
    const bool temporary = root.empty();
    if (temporary) {
        std::string pattern = (std::filesystem::temp_directory_path() / "assistd-dev-cluster-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) {
            std::fprintf(stderr, "assistd dev-cluster: cannot create a temporary directory; give --state-root\n");
            return 2;
        }
        root = pattern;
    } else if (std::filesystem::create_directories(root, ec); ec) {
        std::fprintf(stderr, "assistd dev-cluster: cannot create --state-root %s: %s\n", root.c_str(),
                     ec.message().c_str());
        return 2;
    }

    const sigset_t signals = block_stop_signals();

    std::vector<Child> children(static_cast<size_t>(o.nodes));
    std::string peers;
    std::vector<std::string> names;
    for (int i = 0; i < o.nodes; ++i) names.push_back("node" + std::to_string(i));
    // The nodes authenticate each other as in production, with a CA made for this fleet.
    std::vector<std::vector<std::string>> tls_args;
    if (!peer_tls_args(root / "certs", names, tls_args)) return 2;
    for (int i = 0; i < o.nodes; ++i) {
        auto& c = children[static_cast<size_t>(i)];
        c.http_port = o.base_port + i;
        c.peer_port = o.base_port + 100 + i;
        c.state_dir = root / ("node" + std::to_string(i));
        c.log = root / ("node" + std::to_string(i) + ".log");
        peers += (peers.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(c.peer_port);
    }
    for (size_t i = 0; i < children.size(); ++i) {
        auto& c = children[i];
        const std::string peer = "127.0.0.1:" + std::to_string(c.peer_port);
        std::vector<std::string> argv = {"assistd", "serve", "--model", o.model, "--threads", std::to_string(o.threads),
                                         "--host", "127.0.0.1", "--port", std::to_string(c.http_port), "--state-dir",
                                         c.state_dir.string(), "--peers", peers, "--listen-peer", peer,
                                         "--advertise-peer", peer};
        argv.insert(argv.end(), tls_args[i].begin(), tls_args[i].end());
        argv.insert(argv.end(), o.serve_args.begin(), o.serve_args.end());
        c.pid = spawn(argv, c.log);
    }

    // Ready, or one died (its log says why), or 60 s passed.
    bool all_ready = false;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < until) {
        if (reap(children, true) < children.size()) break;
        all_ready = true;
        for (const auto& c : children) all_ready = all_ready && ready(c.http_port);
        if (all_ready) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    int rc = 0;
    if (all_ready) {
        std::printf("assistd dev-cluster: %d nodes ready (state in %s%s)\n", o.nodes, root.c_str(),
                    temporary ? ", removed on exit" : "");
        for (size_t i = 0; i < children.size(); ++i) {
            const auto& c = children[i];
            std::printf("  node %zu: http://127.0.0.1:%d   peer 127.0.0.1:%d   log %s\n", i, c.http_port, c.peer_port,
                        c.log.c_str());
        }
        std::printf("  try: curl http://127.0.0.1:%d/v1/chat/completions -H 'Content-Type: application/json' "
                    "-d '{\"session_id\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'\n"
                    "       curl http://127.0.0.1:%d/v1/sessions/demo      (the same session on another node)\n"
                    "  Ctrl-C (or SIGTERM) drains and stops every node.\n",
                    children[0].http_port, children[o.nodes > 1 ? 1 : 0].http_port);
        std::fflush(stdout);
        // Until a stop signal, or a node dies.
        for (;;) {
            timespec tick{0, 200'000'000};
            const int sig = sigtimedwait(&signals, nullptr, &tick);
            if (sig == SIGINT || sig == SIGTERM) break;
            if (reap(children, true) < children.size()) {
                rc = 1;
                break;
            }
        }
    } else {
        std::fprintf(stderr, "assistd dev-cluster: the fleet did not become ready; see the logs in %s\n", root.c_str());
        rc = 1;
    }
    // Drain every node (SIGTERM), bounded; whatever still runs after that is killed.
    for (const auto& c : children)
        if (c.pid > 0) ::kill(c.pid, SIGTERM);
    const auto stop_until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (reap(children, false) > 0 && std::chrono::steady_clock::now() < stop_until)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (auto& c : children) {
        if (c.pid > 0) {
            ::kill(c.pid, SIGKILL);
            ::waitpid(c.pid, nullptr, 0);
            c.pid = -1;
            rc = 1;
        } else if (c.exit_status != 0 && rc == 0) {
            rc = 1;
        }
    }
    std::printf("assistd dev-cluster: stopped\n");
    if (temporary) std::filesystem::remove_all(root, ec);
    return rc;
}

}  // namespace

void register_dev_cluster(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<DevClusterOptions>();
    CLI::App* cmd = app.add_subcommand(
        "dev-cluster", "Run a local fleet of `assistd serve` nodes on loopback (development and tests)");
    cmd->add_option("--nodes", o->nodes, "Nodes to start")->capture_default_str();
    cmd->add_option("-m,--model", o->model, "Path of a GGUF model file")->required();
    cmd->add_option("--base-port", o->base_port,
                    "Node i serves HTTP on base + i and replicates on base + 100 + i")
        ->capture_default_str();
    cmd->add_option("--state-root", o->state_root,
                    "Directory of the nodes' state and logs (default: a temporary one, removed on exit)");
    cmd->add_option("-t,--threads", o->threads, "Compute threads per node")->capture_default_str();
    cmd->add_option("serve-args", o->serve_args, "After --: more `assistd serve` options for every node");
    cmd->callback([o, &exit_code] { exit_code = run_dev_cluster(*o); });
}

}  // namespace assistd::cli
