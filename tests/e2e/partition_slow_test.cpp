// A real network partition of a three-node fleet (issue 5): each node runs
// `assistd serve` in a network namespace of its own, on a cluster network
// (a Linux bridge in a fourth "hub" namespace, veth pairs to each node) and a
// client link (a second veth pair from the hub to each node, where the test's
// HTTP client sits). One node's cluster link is set down for 10 s: it can no
// longer reach its peers (the packets are dropped silently, as in a real
// partition), while clients still reach every node. During the cut both sides
// keep answering turns, for existing and new sessions; after the heal every
// replica must hold identical documents within seconds (acceptance: 2 s,
// asserted at 5 s on this shared machine) and no acknowledged message may be
// lost. Nothing outside the namespaces the test creates is touched.
//
// Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN) and `ip` (iproute2); skips
// with a message otherwise, and without ../shared/models/stories260K.gguf.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "cluster/peer_certs.h"
#include "local_fleet.h"

namespace assistd::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// ------------------------------------------------------------ commands

struct CommandResult {
    int status = -1;     // exit status; 127: not found
    std::string output;  // stdout and stderr
};

CommandResult run_command(const std::vector<std::string>& argv) {
    CommandResult r;
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return r;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipe_fds[1], 1);
        ::dup2(pipe_fds[1], 2);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    char buf[4096];
    for (;;) {
        const ssize_t n = ::read(pipe_fds[0], buf, sizeof buf);
        if (n <= 0) break;
        r.output.append(buf, static_cast<size_t>(n));
    }
    ::close(pipe_fds[0]);
    int status = 0;
    if (pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status))
        r.status = WEXITSTATUS(status);
    return r;
}

CommandResult ip(std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    return run_command(args);
}

std::string joined(const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
    return s;
}

// ------------------------------------------------------------ the network

// Namespaces "assistd-part-<pid>-hub" and "-n<k>": the hub holds the bridge
// br0 (ports vb<k>) and the client ends c<k> (10.98.<k>.1); node k has eth0
// (10.99.0.<11+k>, the cluster network) and cli (10.98.<k>.2, clients).
// Removed in every path (the destructor); namespaces left by an earlier run
// that crashed (its pid is gone) are removed first.
class PartitionNet {
  public:
    static constexpr const char* kPrefix = "assistd-part-";

    explicit PartitionNet(int nodes) : nodes_(nodes), base_(kPrefix + std::to_string(::getpid())) {}
    ~PartitionNet() {
        for (const auto& ns : created_) remove_namespace(ns);
    }
    PartitionNet(const PartitionNet&) = delete;
    PartitionNet& operator=(const PartitionNet&) = delete;

    // Builds the network; on failure, why (for the skip message or the failure).
    bool build(std::string& why) {
        remove_stale();
        if (!add_namespace(hub(), why)) return false;
        for (int k = 0; k < nodes_; ++k)
            if (!add_namespace(node_ns(k), why)) return false;
        const std::string vb = "vb", c = "c";
        std::vector<std::vector<std::string>> steps = {
            {"-n", hub(), "link", "add", "br0", "type", "bridge"},
            {"-n", hub(), "link", "set", "br0", "up"},
            {"-n", hub(), "link", "set", "lo", "up"},
        };
        for (int k = 0; k < nodes_; ++k) {
            const std::string n = node_ns(k), ks = std::to_string(k);
            const std::vector<std::vector<std::string>> node_steps = {
                {"-n", hub(), "link", "add", vb + ks, "type", "veth", "peer", "name", "eth0",
                 "netns", n},
                {"-n", hub(), "link", "set", vb + ks, "master", "br0", "up"},
                {"-n", n, "addr", "add", cluster_ip(k) + "/24", "dev", "eth0"},
                {"-n", n, "link", "set", "eth0", "up"},
                {"-n", n, "link", "set", "lo", "up"},
                {"-n", hub(), "link", "add", c + ks, "type", "veth", "peer", "name", "cli", "netns",
                 n},
                {"-n", hub(), "addr", "add", "10.98." + ks + ".1/24", "dev", c + ks},
                {"-n", hub(), "link", "set", c + ks, "up"},
                {"-n", n, "addr", "add", client_ip(k) + "/24", "dev", "cli"},
                {"-n", n, "link", "set", "cli", "up"},
            };
            steps.insert(steps.end(), node_steps.begin(), node_steps.end());
        }
        for (const auto& s : steps) {
            const CommandResult r = ip(s);
            if (r.status != 0) {
                why = "`ip " + joined(s) + "` failed: " + r.output;
                return false;
            }
        }
        return true;
    }

    // The partition: node k's port on the bridge goes down, so its cluster
    // link has no carrier and every packet over it is dropped (no error is
    // reported to the sockets); its client link stays up.
    bool set_cut(int k, bool cut, std::string& why) {
        const std::vector<std::string> s = {
            "-n", hub(), "link", "set", "vb" + std::to_string(k), cut ? "down" : "up"};
        const CommandResult r = ip(s);
        if (r.status != 0) why = "`ip " + joined(s) + "` failed: " + r.output;
        return r.status == 0;
    }

    std::string hub() const { return base_ + "-hub"; }
    std::string node_ns(int k) const { return base_ + "-n" + std::to_string(k); }
    static std::string cluster_ip(int k) { return "10.99.0." + std::to_string(11 + k); }
    static std::string client_ip(int k) { return "10.98." + std::to_string(k) + ".2"; }
    static std::string ns_path(const std::string& ns) { return "/run/netns/" + ns; }

  private:
    bool add_namespace(const std::string& ns, std::string& why) {
        const CommandResult r = ip({"netns", "add", ns});
        if (r.status == 127) {
            why = "no `ip` binary (install iproute2)";
            return false;
        }
        if (r.status != 0) {
            why = "cannot create network namespace " + ns +
                  " (needs root or CAP_NET_ADMIN): " + r.output;
            return false;
        }
        created_.push_back(ns);
        return true;
    }

    // Whatever still runs in the namespace is a node this test (or a crashed
    // earlier run of it) started: killed, then the namespace goes.
    static void remove_namespace(const std::string& ns) {
        std::istringstream pids(ip({"netns", "pids", ns}).output);
        for (pid_t pid; pids >> pid;) ::kill(pid, SIGKILL);
        ip({"netns", "del", ns});
    }

    static void remove_stale() {
        std::istringstream list(ip({"netns", "list"}).output);
        for (std::string line; std::getline(list, line);) {
            const std::string name = line.substr(0, line.find(' '));
            if (name.rfind(kPrefix, 0) != 0) continue;
            const pid_t owner = static_cast<pid_t>(std::atol(name.c_str() + std::strlen(kPrefix)));
            if (owner <= 0 || owner == ::getpid()) continue;
            if (::kill(owner, 0) == 0 || errno != ESRCH) continue;  // its run is still going
            std::fprintf(stderr, "removing network namespace %s left by a crashed run\n",
                         name.c_str());
            remove_namespace(name);
        }
    }

    int nodes_;
    std::string base_;
    std::vector<std::string> created_;
};

// ------------------------------------------------------------ the client

// HTTP exchanges from inside the hub namespace: each on a short-lived thread
// that joins the namespace first (setns changes the calling thread only).
class HubClient {
  public:
    explicit HubClient(const std::string& hub_ns)
        : fd_(::open(PartitionNet::ns_path(hub_ns).c_str(), O_RDONLY | O_CLOEXEC)) {}
    ~HubClient() {
        if (fd_ >= 0) ::close(fd_);
    }
    bool usable() {
        bool ok = false;
        std::thread t([&] { ok = fd_ >= 0 && ::setns(fd_, CLONE_NEWNET) == 0; });
        t.join();
        return ok;
    }

    // One exchange with node k's HTTP port (status 0: no answer).
    Reply http(int k, const std::string& method, const std::string& path,
               const std::string& body = "") {
        Reply out;
        std::thread t([&] {
            if (::setns(fd_, CLONE_NEWNET) != 0) return;
            using namespace serve::test_support;
            const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return;
            timeval tv{30, 0};
            ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            sockaddr_in addr{};
            addr.sin_family = AF_INET;
            addr.sin_port = htons(kHttpPort);
            ::inet_pton(AF_INET, PartitionNet::client_ip(k).c_str(), &addr.sin_addr);
            if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
                send_all(fd, request_text(method, path, body, true));
                const std::string raw = read_to_eof(fd);
                if (parse_reply(raw, out) == 0) out = Reply{};
            }
            ::close(fd);
        });
        t.join();
        return out;
    }

    static constexpr uint16_t kHttpPort = 8080;

  private:
    int fd_;
};

// ------------------------------------------------------------ the nodes

// `assistd serve` processes, each started inside its node's namespace.
class NamespacedFleet {
  public:
    NamespacedFleet(const PartitionNet& net, int nodes) : net_(net), nodes_(nodes) {
        std::string pattern = (fs::temp_directory_path() / "assistd-partition-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        root_ = pattern;
        pids_.assign(static_cast<size_t>(nodes), -1);
        std::vector<std::string> names;
        for (int k = 0; k < nodes; ++k) {
            if (!peers_.empty()) peers_ += ',';
            peers_ += peer_address(k);
            names.push_back("node" + std::to_string(k));
        }
        // Over mutual TLS, as production runs: the partition must heal through handshakes too.
        auto tls = cluster::make_throwaway_fleet((root_ / "certs").string(), names, 2);
        if (!tls.ok()) throw std::runtime_error(tls.error().message);
        tls_ = *tls;
    }
    ~NamespacedFleet() {
        for (pid_t pid : pids_) {
            if (pid <= 0) continue;
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        std::error_code ec;
        fs::remove_all(root_, ec);
    }
    NamespacedFleet(const NamespacedFleet&) = delete;
    NamespacedFleet& operator=(const NamespacedFleet&) = delete;

    static std::string peer_address(int k) { return PartitionNet::cluster_ip(k) + ":9090"; }

    void start(int k) {
        const std::string ns = PartitionNet::ns_path(net_.node_ns(k));
        const std::string log = log_path(k).string();
        std::vector<std::string> argv = {
            ASSISTD_BINARY,     "serve",
            "--model",          model_path(),
            "--threads",        "1",
            "--host",           PartitionNet::client_ip(k),
            "--port",           std::to_string(HubClient::kHttpPort),
            "--io-threads",     "2",
            "--state-dir",      (root_ / ("node" + std::to_string(k))).string(),
            "--peers",          peers_,
            "--listen-peer",    peer_address(k),
            "--advertise-peer", peer_address(k),
            "--peer-tls-cert",  tls_[static_cast<size_t>(k)].cert_path,
            "--peer-tls-key",   tls_[static_cast<size_t>(k)].key_path,
            "--peer-tls-ca",    tls_[static_cast<size_t>(k)].ca_path,
            // The availability this test is about: a cut-off node serves what it holds.
            "--degraded-writes", "true"};
        const pid_t pid = ::fork();
        if (pid == 0) {
            const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (out >= 0) {
                ::dup2(out, 1);
                ::dup2(out, 2);
            }
            const int nsfd = ::open(ns.c_str(), O_RDONLY);
            if (nsfd < 0 || ::setns(nsfd, CLONE_NEWNET) != 0) {
                static const char msg[] = "cannot enter the node's network namespace\n";
                (void)!::write(2, msg, sizeof msg - 1);
                ::_exit(126);
            }
            std::vector<char*> args;
            for (auto& a : argv) args.push_back(a.data());
            args.push_back(nullptr);
            ::execv(args[0], args.data());
            ::_exit(127);
        }
        pids_[static_cast<size_t>(k)] = pid;
    }

    bool running(int k) {
        pid_t& pid = pids_[static_cast<size_t>(k)];
        if (pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == pid) pid = -1;
        return pid > 0;
    }

    fs::path log_path(int k) const { return root_ / ("node" + std::to_string(k) + ".log"); }
    std::string logs() const {
        std::string out;
        for (int k = 0; k < nodes_; ++k) {
            std::ifstream in(log_path(k));
            std::stringstream s;
            s << in.rdbuf();
            out += "--- node " + std::to_string(k) + " ---\n" + s.str();
        }
        return out;
    }

  private:
    const PartitionNet& net_;
    int nodes_;
    fs::path root_;
    std::vector<pid_t> pids_;
    std::string peers_;
    std::vector<cluster::PeerTlsFiles> tls_;
};

// ------------------------------------------------------------ the test

constexpr int kNodes = 3;
constexpr int kIsolated = 2;  // nodes 0 and 1 are the majority side
constexpr auto kCut = std::chrono::seconds(10);

std::string chat_body(const std::string& session, const std::string& user) {
    return json{{"session_id", session},
                {"messages", json::array({{{"role", "user"}, {"content", user}}})},
                {"max_tokens", 8},
                {"stream", false}}
        .dump();
}

// A value of a metric line "name value" (or "name{...} value") in /metrics; -1 when absent.
double metric(const std::string& text, const std::string& name) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(name, 0) != 0) continue;
        if (line.size() > name.size() && line[name.size()] != ' ' && line[name.size()] != '{')
            continue;
        return std::atof(line.c_str() + line.rfind(' ') + 1);
    }
    return -1;
}

// An acknowledged turn: its question and the answer the client got.
struct AckedTurn {
    int side = 0;  // 0: the majority side, 1: the isolated node
    std::string user;
    std::string answer;
};

class PartitionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!model_available()) GTEST_SKIP() << "no " << model_path();
        net_ = std::make_unique<PartitionNet>(kNodes);
        std::string why;
        if (!net_->build(why)) {
            net_.reset();
            GTEST_SKIP() << "network namespaces are not available here, so the partition test "
                            "cannot run: "
                         << why;
        }
        client_ = std::make_unique<HubClient>(net_->hub());
        if (!client_->usable()) {
            client_.reset();
            net_.reset();
            GTEST_SKIP() << "cannot enter a network namespace (setns needs CAP_SYS_ADMIN)";
        }
    }
    void TearDown() override {
        if (HasFailure() && fleet_) std::fprintf(stderr, "%s", fleet_->logs().c_str());
        fleet_.reset();  // the nodes first,
        client_.reset();
        net_.reset();  // then their namespaces
    }

    // A turn through node k, retried on 503 (as a client honouring Retry-After
    // would) up to 8 times; the 503s are counted with when they came.
    Reply turn(int k, const std::string& session, const std::string& user) {
        Reply r;
        for (int attempt = 0; attempt < 8; ++attempt) {
            r = client_->http(k, "POST", "/v1/chat/completions", chat_body(session, user));
            if (r.status != 503) break;
            retried_503_ms_.push_back(cut_at_ ? ms_since(*cut_at_) : -1);
            std::this_thread::sleep_for(std::chrono::milliseconds(250));
        }
        return r;
    }

    // Node k's own copy of a session (GET ?local=1); null when it has none.
    json local_copy(int k, const std::string& id) {
        const Reply r = client_->http(k, "GET", "/v1/sessions/" + id + "?local=1");
        return r.status == 200 ? r.json_body() : json();
    }

    bool identical_everywhere(const std::string& id) {
        const json first = local_copy(0, id);
        if (first.is_null()) return false;
        for (int k = 1; k < kNodes; ++k)
            if (local_copy(k, id) != first) return false;
        return true;
    }

    std::unique_ptr<PartitionNet> net_;
    std::unique_ptr<HubClient> client_;
    std::unique_ptr<NamespacedFleet> fleet_;
    std::optional<Clock::time_point> cut_at_;
    std::vector<double> retried_503_ms_;
    std::map<std::string, std::string> iso_ids_;  // "iso<r>" -> the id POST /v1/sessions gave
};

TEST_F(PartitionTest, ANodeCutOffFor10SecondsKeepsServingAndTheFleetConvergesAfterTheHeal) {
    fleet_ = std::make_unique<NamespacedFleet>(*net_, kNodes);
    NamespacedFleet& f = *fleet_;
    for (int k = 0; k < kNodes; ++k) f.start(k);
    for (int k = 0; k < kNodes; ++k) {
        ASSERT_TRUE(
            eventually(
                [&] { return !f.running(k) || client_->http(k, "GET", "/readyz").status == 200; },
                std::chrono::seconds(60)) &&
            f.running(k))
            << "node " << k << " not ready";
    }

    std::map<std::string, std::vector<AckedTurn>> acked;  // by session
    auto record = [&](int side, const std::string& session, const std::string& user,
                      const Reply& r) {
        ASSERT_EQ(r.status, 200) << "side " << side << ", session " << session << ": " << r.body;
        acked[session].push_back({side, user, r.json_body()["choices"][0]["message"]["content"]});
    };

    // Before the cut: conversations started through every node. S<i> will be
    // continued by both sides during the cut, M<i> by the majority side only,
    // I<i> by the isolated node only (six of each, so none outgrows the
    // model's context).
    constexpr int kPerKind = 6;
    std::vector<std::string> before;
    for (const char* kind : {"S", "M", "I"})
        for (int i = 0; i < kPerKind; ++i) before.push_back(kind + std::to_string(i));
    for (size_t i = 0; i < before.size(); ++i) {
        const int k = static_cast<int>(i % kNodes);
        const std::string user = "Once upon a time " + before[i];
        ASSERT_NO_FATAL_FAILURE(
            record(k == kIsolated ? 1 : 0, before[i], user, turn(k, before[i], user)));
    }
    for (const auto& id : before)
        ASSERT_TRUE(eventually([&] { return identical_everywhere(id); }, std::chrono::seconds(10)))
            << id << " did not replicate before the cut";

    // The cut. Each round (at most one every 400 ms): both sides continue
    // S<r%6>, the majority side M<r%6> and the isolated node I<r%6>, and
    // each side starts a new session.
    std::string why;
    ASSERT_TRUE(net_->set_cut(kIsolated, true, why)) << why;
    cut_at_ = Clock::now();
    int majority_turns = 0, isolated_turns = 0, rounds = 0;
    for (; rounds < 40 && Clock::now() - *cut_at_ < kCut; ++rounds) {
        const auto round_start = Clock::now();
        const std::string r = std::to_string(rounds), i = std::to_string(rounds % kPerKind);
        const int a = rounds % 2, b = 1 - a;  // the majority nodes of this round
        struct Planned {
            int node;
            std::string session;
        };
        const std::vector<Planned> plan = {{a, "S" + i},         {b, "M" + i},
                                           {a, "maj" + r},       {kIsolated, "S" + i},
                                           {kIsolated, "I" + i}, {kIsolated, "iso" + r}};
        for (auto p : plan) {
            const int side = p.node == kIsolated ? 1 : 0;
            // The isolated node cannot tell an unknown id from a session the other
            // side holds (503), so its new sessions are created explicitly.
            if (p.session.starts_with("iso")) {
                const Reply created = client_->http(kIsolated, "POST", "/v1/sessions", "{}");
                ASSERT_EQ(created.status, 200) << created.body;
                p.session = iso_ids_[p.session] = created.json_body()["id"].get<std::string>();
            }
            const std::string user = "r" + r + " side" + std::to_string(side) + " " + p.session;
            ASSERT_NO_FATAL_FAILURE(record(side, p.session, user, turn(p.node, p.session, user)));
            (side ? isolated_turns : majority_turns)++;
        }
        std::this_thread::sleep_until(round_start + std::chrono::milliseconds(400));
    }
    // The cut was real: neither side holds what the other wrote.
    EXPECT_TRUE(local_copy(0, iso_ids_.at("iso0")).is_null())
        << "the majority side got a session of the isolated node";
    EXPECT_TRUE(local_copy(kIsolated, "maj0").is_null())
        << "the isolated node got a session of the majority";
    const std::string isolated_metrics = client_->http(kIsolated, "GET", "/metrics").body;
    EXPECT_EQ(metric(isolated_metrics, "assistd_cluster_peers_suspect"), 2) << isolated_metrics;
    EXPECT_GT(metric(isolated_metrics, "assistd_replication_degraded_writes_total"), 0);
    EXPECT_EQ(metric(client_->http(0, "GET", "/metrics").body, "assistd_cluster_peers_suspect"), 1);
    const double cut_ms = ms_since(*cut_at_);

    // The heal, and the time until every replica holds the same document of
    // every session either side wrote.
    ASSERT_TRUE(net_->set_cut(kIsolated, false, why)) << why;
    const auto healed_at = Clock::now();
    std::set<std::string> pending;
    for (const auto& [id, turns] : acked) pending.insert(id);
    double converged_ms = -1;
    while (ms_since(healed_at) < 20000) {
        // A pass stops at the first session that still differs, so passes
        // stay short (they all converge in the same anti-entropy round) and
        // the time is measured finely; a session found identical stays so
        // (no one writes any more).
        while (!pending.empty() && identical_everywhere(*pending.begin()))
            pending.erase(pending.begin());
        if (pending.empty()) {
            converged_ms = ms_since(healed_at);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::printf(
        "partition: node %d cut off for %.1f s; %d rounds: the majority side answered %d turns, "
        "the "
        "isolated node %d (new sessions: %d on each side); 503s retried: %zu (the last %.0f ms "
        "after the "
        "cut)\n",
        kIsolated, cut_ms / 1000, rounds, majority_turns, isolated_turns, rounds,
        retried_503_ms_.size(),
        retried_503_ms_.empty()
            ? 0.0
            : *std::max_element(retried_503_ms_.begin(), retried_503_ms_.end()));
    std::printf(
        "partition: every replica of all %zu sessions identical %.0f ms after the heal "
        "(acceptance: 2000 ms; asserted: 5000 ms)\n",
        acked.size(), converged_ms);
    ASSERT_GE(converged_ms, 0) << "not converged 20 s after the heal; differing: "
                               << *pending.begin();
    // Acceptance is 2 s; 5 s leaves room for the machine's load (builds alongside).
    EXPECT_LT(converged_ms, 5000);
    // Before failure detection (--peer-suspect-ms 1000) a change may wait and
    // a fetch may time out; after it, both sides answer at once.
    for (double at : retried_503_ms_) EXPECT_LT(at, 3000) << "a 503 " << at << " ms into the cut";
    EXPECT_GE(rounds, 5) << "too few rounds in 10 s";

    // No acknowledged message is lost: every question once, in each side's
    // order, and every answer a client got.
    for (const auto& [id, turns] : acked) {
        const json doc = local_copy(0, id);
        ASSERT_FALSE(doc.is_null()) << id;
        std::vector<std::string> users;
        std::multiset<std::string> answers;
        for (const auto& m : doc["messages"]) {
            const std::string content = m["content"];
            if (m["role"] == "user")
                users.push_back(content);
            else
                answers.insert(content);
        }
        EXPECT_EQ(answers.size(), turns.size()) << id;
        for (int side = 0; side < 2; ++side) {
            std::vector<std::string> expected, seen;
            for (const auto& t : turns)
                if (t.side == side) expected.push_back(t.user);
            for (const auto& u : users)
                if (std::find(expected.begin(), expected.end(), u) != expected.end())
                    seen.push_back(u);
            EXPECT_EQ(seen, expected) << id << ", side " << side;
        }
        EXPECT_EQ(users.size(), turns.size()) << id;
        for (const auto& t : turns) {
            auto a = answers.find(t.answer);
            EXPECT_TRUE(a != answers.end())
                << id << ": the answer to '" << t.user << "' is missing";
            if (a != answers.end()) answers.erase(a);
        }
        // A normal read on the healed isolated node gives the same document.
        const Reply r = client_->http(kIsolated, "GET", "/v1/sessions/" + id);
        ASSERT_EQ(r.status, 200) << id;
        EXPECT_EQ(r.json_body(), doc) << id;
    }
}

}  // namespace
}  // namespace assistd::e2e
