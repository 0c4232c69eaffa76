// deploy/: the Kubernetes manifests and Dockerfiles, checked offline against
// the binaries they run. Every manifest parses; kustomize references exist;
// the Deployment's flags and config keys are flags `assistd serve` has; probes
// and ports agree with the config and the sidecar; the drain fits in the
// termination grace period; the metric the HPA scales on is derived from one
// that a running assistd really exports.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

const fs::path kDeploy = fs::path(ASSISTD_SOURCE_DIR) / "deploy";
const fs::path kBase = kDeploy / "k8s" / "base";

std::string read_file(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct ProcessResult {
    int status = -1;
    std::string out;  // stdout and stderr
};

// Runs argv to completion (bounded by timeout_s) and collects its output.
ProcessResult run(const std::vector<std::string>& argv, int timeout_s = 60) {
    ProcessResult r;
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) return r;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipe_fds[1], 1);
        ::dup2(pipe_fds[1], 2);
        ::close(pipe_fds[0]);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    char buf[4096];
    for (ssize_t n; (n = ::read(pipe_fds[0], buf, sizeof buf)) > 0;) {
        r.out.append(buf, static_cast<size_t>(n));
        if (std::chrono::steady_clock::now() > until) {
            ::kill(pid, SIGKILL);
            break;
        }
    }
    ::close(pipe_fds[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

// Long flags of `assistd serve`, from its --help.
std::set<std::string> serve_flags() {
    const ProcessResult r = run({ASSISTD_BINARY, "serve", "--help"});
    std::set<std::string> flags;
    const std::regex flag("--([a-z0-9][a-z0-9-]*)");
    for (std::sregex_iterator it(r.out.begin(), r.out.end(), flag), end; it != end; ++it) flags.insert((*it)[1]);
    return flags;
}

std::vector<YAML::Node> load_all(const fs::path& p) { return YAML::LoadAllFromFile(p.string()); }

YAML::Node find_kind(const std::string& kind, const std::string& name = "") {
    for (const auto& entry : fs::directory_iterator(kBase)) {
        if (entry.path().extension() != ".yaml") continue;
        for (const auto& doc : load_all(entry.path())) {
            if (doc["kind"] && doc["kind"].as<std::string>() == kind &&
                (name.empty() || doc["metadata"]["name"].as<std::string>() == name))
                return doc;
        }
    }
    ADD_FAILURE() << "no " << kind << " " << name << " in " << kBase;
    return YAML::Node();
}

YAML::Node container(const YAML::Node& deployment, const std::string& name) {
    for (const auto& c : deployment["spec"]["template"]["spec"]["containers"])
        if (c["name"].as<std::string>() == name) return c;
    ADD_FAILURE() << "no container " << name;
    return YAML::Node();
}

int named_port(const YAML::Node& c, const std::string& name) {
    for (const auto& p : c["ports"])
        if (p["name"].as<std::string>() == name) return p["containerPort"].as<int>();
    return -1;
}

YAML::Node config_yaml() { return YAML::LoadFile((kBase / "config.yaml").string()); }


// Starts `assistd-healthcheck watch` with args; returns its pid and listen port.
std::pair<pid_t, int> start_watch(std::vector<std::string> args) {
    args.insert(args.begin(), {ASSISTD_HEALTHCHECK_BINARY, "watch", "--listen", "127.0.0.1:0"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int err_pipe[2];
    if (::pipe(err_pipe) != 0) return {-1, 0};
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(err_pipe[1], 2);
        ::close(err_pipe[0]);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(err_pipe[1]);
    std::string log;
    char buf[512];
    int port = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (port == 0 && std::chrono::steady_clock::now() < until) {
        const ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        log.append(buf, static_cast<size_t>(n));
        const size_t at = log.find("on http://127.0.0.1:");
        if (at != std::string::npos && log.find('\n', at) != std::string::npos) port = std::stoi(log.substr(at + 20));
    }
    ::close(err_pipe[0]);
    return {pid, port};
}

// GET http://127.0.0.1:port/path with python3: "<status> <body>".
std::string get(int port, const std::string& path) {
    return run({"/usr/bin/env", "python3", "-c",
                "import sys,urllib.request as u,urllib.error as e\n"
                "try:\n r=u.urlopen(sys.argv[1],timeout=10); print(r.status, r.read().decode())\n"
                "except e.HTTPError as x: print(x.code, x.read().decode())\n",
                "http://127.0.0.1:" + std::to_string(port) + path})
        .out;
}

void stop(pid_t pid) {
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
}

TEST(DeployManifests, EveryManifestParsesAndKustomizeReferencesExist) {
    size_t docs = 0;
    for (const auto& entry : fs::recursive_directory_iterator(kDeploy / "k8s")) {
        if (entry.path().extension() != ".yaml") continue;
        std::vector<YAML::Node> all;
        ASSERT_NO_THROW(all = load_all(entry.path())) << entry.path();
        for (const auto& doc : all) {
            ++docs;
            if (entry.path().filename() == "config.yaml") continue;
            EXPECT_TRUE(doc["apiVersion"] && doc["kind"]) << entry.path() << " lacks apiVersion/kind";
            if (entry.path().filename() != "kustomization.yaml") {
                EXPECT_TRUE(doc["metadata"] && doc["metadata"]["name"]) << entry.path() << " lacks metadata.name";
            }
        }
        if (entry.path().filename() == "kustomization.yaml") {
            const YAML::Node k = all.at(0);
            for (const auto& r : k["resources"])
                EXPECT_TRUE(fs::exists(entry.path().parent_path() / r.as<std::string>()))
                    << entry.path() << " names a missing resource " << r.as<std::string>();
            for (const auto& g : k["configMapGenerator"])
                for (const auto& f : g["files"])
                    EXPECT_TRUE(fs::exists(entry.path().parent_path() / f.as<std::string>())) << f.as<std::string>();
        }
    }
    EXPECT_GE(docs, 10u);
}

TEST(DeployManifests, DeploymentFlagsAndConfigKeysAreFlagsOfTheBinary) {
    const std::set<std::string> flags = serve_flags();
    ASSERT_TRUE(flags.count("config") && flags.count("port")) << "could not read `assistd serve --help`";
    const YAML::Node main = container(find_kind("Deployment", "assistd"), "assistd");
    const auto args = main["args"].as<std::vector<std::string>>();
    ASSERT_FALSE(args.empty());
    EXPECT_EQ(args[0], "serve");
    std::string config_path;
    for (size_t i = 1; i < args.size(); ++i) {
        if (args[i].rfind("--", 0) != 0) continue;
        const std::string name = args[i].substr(2, args[i].find('=') - 2);
        EXPECT_TRUE(flags.count(name)) << "the Deployment passes --" << name << ", which `assistd serve` lacks";
        if (name == "config" && i + 1 < args.size()) config_path = args[i + 1];
    }
    ASSERT_FALSE(config_path.empty()) << "the Deployment must pass --config";
    for (const auto& kv : config_yaml()) {
        const std::string key = kv.first.as<std::string>();
        EXPECT_TRUE(flags.count(key)) << "config.yaml key '" << key << "' is not a flag of `assistd serve`";
    }
    // The config file is where the ConfigMap is mounted.
    bool mounted = false;
    for (const auto& m : main["volumeMounts"])
        if (m["name"].as<std::string>() == "config" &&
            fs::path(config_path).parent_path() == fs::path(m["mountPath"].as<std::string>()))
            mounted = true;
    EXPECT_TRUE(mounted) << config_path << " is not inside the config volume's mount";
    // The Dockerfile's default command reads the same file.
    EXPECT_NE(read_file(kDeploy / "docker" / "assistd.Dockerfile").find("\"--config\", \"" + config_path + "\""),
              std::string::npos);
}

int port_of(const std::string& address);

TEST(DeployManifests, ProbesPortsAndServicesAgree) {
    const YAML::Node deployment = find_kind("Deployment", "assistd");
    const YAML::Node main = container(deployment, "assistd");
    const int http = named_port(main, "http");
    EXPECT_EQ(http, config_yaml()["port"].as<int>()) << "containerPort http != config port";
    EXPECT_EQ(main["readinessProbe"]["httpGet"]["path"].as<std::string>(), "/readyz");
    EXPECT_EQ(main["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/healthz");
    for (const char* probe : {"readinessProbe", "livenessProbe", "startupProbe"})
        EXPECT_EQ(main[probe]["httpGet"]["port"].as<std::string>(), "http") << probe;
    EXPECT_EQ(config_yaml()["host"].as<std::string>(), "0.0.0.0") << "a pod must bind beyond loopback";
    EXPECT_NE(read_file(kDeploy / "docker" / "assistd.Dockerfile").find("EXPOSE " + std::to_string(http)),
              std::string::npos);

    // Pod labels select everything that points at the pods.
    const YAML::Node labels = deployment["spec"]["template"]["metadata"]["labels"];
    auto selects = [&](const YAML::Node& selector) {
        for (const auto& kv : selector)
            if (!labels[kv.first.as<std::string>()] ||
                labels[kv.first.as<std::string>()].as<std::string>() != kv.second.as<std::string>())
                return false;
        return selector.size() > 0;
    };
    EXPECT_TRUE(selects(deployment["spec"]["selector"]["matchLabels"]));
    EXPECT_TRUE(selects(find_kind("Service", "assistd")["spec"]["selector"]));
    const YAML::Node peers = find_kind("Service", "assistd-peers");
    EXPECT_TRUE(selects(peers["spec"]["selector"]));
    EXPECT_EQ(peers["spec"]["clusterIP"].as<std::string>(), "None");
    EXPECT_TRUE(peers["spec"]["publishNotReadyAddresses"].as<bool>());
    EXPECT_TRUE(selects(find_kind("PodDisruptionBudget", "assistd")["spec"]["selector"]["matchLabels"]));

    // The ServiceMonitor scrapes /metrics at the metrics Service's port, which is the
    // container port the config's metrics-listen binds; the client Service does not publish it.
    const YAML::Node monitor = find_kind("ServiceMonitor", "assistd");
    const YAML::Node endpoint = monitor["spec"]["endpoints"][0];
    EXPECT_EQ(endpoint["path"].as<std::string>(), "/metrics");
    const YAML::Node metrics_service = find_kind("Service", "assistd-metrics");
    for (const auto& kv : monitor["spec"]["selector"]["matchLabels"])
        EXPECT_EQ(metrics_service["metadata"]["labels"][kv.first.as<std::string>()].as<std::string>(),
                  kv.second.as<std::string>())
            << "the ServiceMonitor does not select the metrics Service";
    bool port_found = false;
    for (const auto& p : metrics_service["spec"]["ports"])
        if (p["name"].as<std::string>() == endpoint["port"].as<std::string>()) {
            port_found = true;
            EXPECT_EQ(p["targetPort"].as<std::string>(), "metrics");
        }
    EXPECT_TRUE(port_found) << "the ServiceMonitor scrapes a port the metrics Service does not have";
    ASSERT_TRUE(config_yaml()["metrics-listen"]) << "config.yaml must put /metrics on its own port";
    EXPECT_EQ(named_port(main, "metrics"), port_of(config_yaml()["metrics-listen"].as<std::string>()));
    for (const auto& p : find_kind("Service", "assistd")["spec"]["ports"])
        EXPECT_NE(p["targetPort"].as<std::string>(), "metrics") << "clients must not reach /metrics";
}

// "host:port" -> port (-1 when there is none).
int port_of(const std::string& address) {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) return -1;
    try {
        return std::stoi(address.substr(colon + 1));
    } catch (const std::exception&) {
        return -1;
    }
}

TEST(DeployManifests, PeerPortAgreesAcrossConfigContainerAndHeadlessService) {
    const YAML::Node deployment = find_kind("Deployment", "assistd");
    const YAML::Node main = container(deployment, "assistd");
    const YAML::Node config = config_yaml();
    // The pod replicates on the port the config binds, declared as a container port.
    ASSERT_TRUE(config["listen-peer"]) << "config.yaml must set listen-peer";
    const int peer = port_of(config["listen-peer"].as<std::string>());
    ASSERT_GT(peer, 0);
    EXPECT_EQ(named_port(main, "peer"), peer) << "containerPort peer != listen-peer's port";
    EXPECT_NE(read_file(kDeploy / "docker" / "assistd.Dockerfile").find(" " + std::to_string(peer)), std::string::npos)
        << "the Dockerfile should EXPOSE the peer port";

    // Discovery names the headless Service, at the port it publishes for the pods' peer port.
    const std::string spec = config["peers"].as<std::string>();
    ASSERT_EQ(spec.rfind("dns:", 0), 0u) << "peers must be dns:NAME:PORT, got " << spec;
    const std::string name = spec.substr(4, spec.rfind(':') - 4);
    EXPECT_EQ(name.substr(0, name.find('.')), "assistd-peers") << spec;
    const YAML::Node headless = find_kind("Service", "assistd-peers");
    bool published = false;
    for (const auto& p : headless["spec"]["ports"]) {
        if (p["name"].as<std::string>() != "peer") continue;
        published = true;
        EXPECT_EQ(p["port"].as<int>(), peer) << "the headless Service's peer port";
        EXPECT_EQ(p["targetPort"].as<std::string>(), "peer");
        EXPECT_EQ(port_of(spec), p["port"].as<int>()) << "peers: resolves to the pods at this port";
    }
    EXPECT_TRUE(published) << "the headless Service must publish the peer port";

    // Each pod names itself: node id from the pod name, advertised at its IP and the peer port.
    std::map<std::string, std::string> env;
    for (const auto& e : main["env"])
        if (e["valueFrom"]) env[e["name"].as<std::string>()] = e["valueFrom"]["fieldRef"]["fieldPath"].as<std::string>();
    EXPECT_EQ(env["POD_NAME"], "metadata.name");
    EXPECT_EQ(env["POD_IP"], "status.podIP");
    const auto args = main["args"].as<std::vector<std::string>>();
    auto has = [&](const std::string& arg) { return std::find(args.begin(), args.end(), arg) != args.end(); };
    EXPECT_TRUE(has("--node-id=$(POD_NAME)"));
    EXPECT_TRUE(has("--advertise-peer=$(POD_IP):" + std::to_string(peer)));
    EXPECT_TRUE(config["state-dir"]) << "a fleet node keeps its node id in --state-dir";
}

TEST(DeployManifests, PeersUseMutualTlsWithPerPodCertificatesAndOnlyTheFleetReachesThePeerPort) {
    const YAML::Node deployment = find_kind("Deployment", "assistd");
    const YAML::Node main = container(deployment, "assistd");
    const YAML::Node config = config_yaml();
    EXPECT_FALSE(config["peer-insecure"]) << "production peers never run without TLS";
    // The three files sit in the peer-tls volume's mount.
    std::string mount;
    for (const auto& m : main["volumeMounts"])
        if (m["name"].as<std::string>() == "peer-tls") mount = m["mountPath"].as<std::string>();
    ASSERT_FALSE(mount.empty()) << "the assistd container must mount the peer-tls volume";
    for (const char* key : {"peer-tls-cert", "peer-tls-key", "peer-tls-ca"}) {
        ASSERT_TRUE(config[key]) << "config.yaml must set " << key;
        EXPECT_EQ(fs::path(config[key].as<std::string>()).parent_path(), fs::path(mount)) << key;
    }
    // Each pod's certificate names the node id it runs with: assistd-node:<pod name>.
    YAML::Node attributes;
    for (const auto& v : deployment["spec"]["template"]["spec"]["volumes"])
        if (v["name"].as<std::string>() == "peer-tls") attributes = v["csi"]["volumeAttributes"];
    ASSERT_TRUE(attributes) << "the peer-tls volume is cert-manager's csi-driver";
    EXPECT_EQ(attributes["csi.cert-manager.io/uri-sans"].as<std::string>(), "assistd-node:${POD_NAME}");
    const std::string usages = attributes["csi.cert-manager.io/key-usages"].as<std::string>();
    EXPECT_NE(usages.find("server auth"), std::string::npos);
    EXPECT_NE(usages.find("client auth"), std::string::npos);
    const auto args = main["args"].as<std::vector<std::string>>();
    EXPECT_NE(std::find(args.begin(), args.end(), "--node-id=$(POD_NAME)"), args.end());
    // The Issuer the volume names is what overlays/peer-ca creates.
    const std::string issuer = attributes["csi.cert-manager.io/issuer-name"].as<std::string>();
    bool issuer_made = false;
    for (const auto& doc : load_all(kDeploy / "k8s" / "overlays" / "peer-ca" / "peer-ca.yaml"))
        if (doc["kind"].as<std::string>() == "Issuer" && doc["metadata"]["name"].as<std::string>() == issuer)
            issuer_made = doc["spec"]["ca"].IsDefined();
    EXPECT_TRUE(issuer_made) << "overlays/peer-ca must define the CA Issuer " << issuer;

    // The NetworkPolicy: the peer port from the fleet's pods only; http and health from anyone.
    const YAML::Node policy = find_kind("NetworkPolicy", "assistd");
    const auto labels = deployment["spec"]["template"]["metadata"]["labels"];
    EXPECT_EQ(policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
              labels["app.kubernetes.io/name"].as<std::string>());
    bool peer_rule = false;
    for (const auto& rule : policy["spec"]["ingress"]) {
        std::set<std::string> ports;
        for (const auto& p : rule["ports"]) ports.insert(p["port"].as<std::string>());
        if (ports.count("peer")) {
            peer_rule = true;
            ASSERT_TRUE(rule["from"]) << "the peer port must name who may connect";
            for (const auto& from : rule["from"])
                EXPECT_EQ(from["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as<std::string>(),
                          labels["app.kubernetes.io/name"].as<std::string>());
        } else {
            const YAML::Node sidecar = container(deployment, "healthcheck");
            for (const auto& port : ports)
                EXPECT_TRUE(named_port(main, port) > 0 || named_port(sidecar, port) > 0)
                    << "the NetworkPolicy opens port " << port << ", which no container declares";
        }
    }
    EXPECT_TRUE(peer_rule);
}

TEST(DeployManifests, TerminationGraceCoversPreStopAndDrain) {
    const YAML::Node deployment = find_kind("Deployment", "assistd");
    const int grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as<int>();
    const auto pre_stop =
        container(deployment, "assistd")["lifecycle"]["preStop"]["exec"]["command"].as<std::vector<std::string>>();
    ASSERT_EQ(pre_stop.size(), 2u);
    ASSERT_EQ(pre_stop[0], "sleep");
    const double drain = config_yaml()["drain-grace-s"].as<double>() +
                         (config_yaml()["drain-replication-s"] ? config_yaml()["drain-replication-s"].as<double>() : 10);
    EXPECT_GE(grace, std::stoi(pre_stop[1]) + drain + 5)
        << "terminationGracePeriodSeconds must cover preStop + drain-grace-s + drain-replication-s + a margin";
}

TEST(DeployManifests, HpaScalesOnCpuAndOnTheLatencyMetricTheBinaryExports) {
    const YAML::Node hpa = find_kind("HorizontalPodAutoscaler", "assistd");
    EXPECT_EQ(hpa["apiVersion"].as<std::string>(), "autoscaling/v2");
    EXPECT_EQ(hpa["spec"]["minReplicas"].as<int>(), 3);
    EXPECT_EQ(hpa["spec"]["maxReplicas"].as<int>(), 20);
    EXPECT_EQ(hpa["spec"]["scaleTargetRef"]["name"].as<std::string>(), "assistd");
    std::string external_metric;
    bool cpu = false;
    for (const auto& m : hpa["spec"]["metrics"]) {
        if (m["type"].as<std::string>() == "Resource" && m["resource"]["name"].as<std::string>() == "cpu") {
            EXPECT_EQ(m["resource"]["target"]["averageUtilization"].as<int>(), 70);
            cpu = true;
        }
        if (m["type"].as<std::string>() == "External") {
            external_metric = m["external"]["metric"]["name"].as<std::string>();
            EXPECT_EQ(m["external"]["target"]["value"].as<std::string>(), "120m");
        }
    }
    EXPECT_TRUE(cpu);
    ASSERT_FALSE(external_metric.empty());

    // The adapter rule produces that metric from series of the binary.
    const YAML::Node adapter = find_kind("ConfigMap", "assistd-prometheus-adapter-rules");
    const YAML::Node rules = YAML::Load(adapter["data"]["config.yaml"].as<std::string>());
    const YAML::Node rule = rules["externalRules"][0];
    EXPECT_EQ(rule["name"]["as"].as<std::string>(), external_metric);
    std::set<std::string> series;
    const std::string query = rule["seriesQuery"].as<std::string>() + rule["metricsQuery"].as<std::string>();
    const std::regex name("assistd_[a-z_]+");
    for (std::sregex_iterator it(query.begin(), query.end(), name), end; it != end; ++it) series.insert(it->str());
    ASSERT_FALSE(series.empty());

    // A running assistd (on a tiny random model) exports every one of them.
    const fs::path dir = fs::temp_directory_path() / ("assistd-deploy-test-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const std::string model = (dir / "tiny.gguf").string();
    ASSERT_EQ(run({ASSISTD_BINARY, "model", "random", "--shape", "tiny-llama", "--dtype", "f32", "--out", model}).status,
              0);
    int out_pipe[2];
    ASSERT_EQ(::pipe(out_pipe), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out_pipe[1], 2);
        ::close(out_pipe[0]);
        ::execl(ASSISTD_BINARY, ASSISTD_BINARY, "serve", "--model", model.c_str(), "--port", "0", "--threads", "1",
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    std::string log;
    int port = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    char buf[512];
    while (port == 0 && std::chrono::steady_clock::now() < until) {
        const ssize_t n = ::read(out_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        log.append(buf, static_cast<size_t>(n));
        const size_t at = log.find("http://127.0.0.1:");
        if (at != std::string::npos && log.find(' ', at + 17) != std::string::npos)
            port = std::stoi(log.substr(at + 17));
    }
    ASSERT_NE(port, 0) << log;
    const std::string base = "http://127.0.0.1:" + std::to_string(port);
    // The sidecar's probe sees it healthy.
    const ProcessResult sidecar = run({ASSISTD_HEALTHCHECK_BINARY, "probe", base + "/healthz"});
    EXPECT_EQ(sidecar.status, 0) << sidecar.out;
    // One completion, so the latency histogram has an observation, then /metrics.
    const ProcessResult metrics = run({"/usr/bin/env", "python3", "-c",
                             "import json,sys,urllib.request as u\n"
                             "b=sys.argv[1]\n"
                             "r=u.Request(b+'/v1/completions',data=json.dumps({'prompt':'hi','max_tokens':2}).encode(),"
                             "headers={'Content-Type':'application/json'})\n"
                             "u.urlopen(r,timeout=30).read()\n"
                             "print(u.urlopen(b+'/metrics',timeout=30).read().decode())\n",
                             base});
    // The sidecar's deep check (one-token completions) keeps /livez green.
    const auto [watch_pid, watch_port] = start_watch({"--target", base, "--deep", "--interval-ms", "100"});
    ASSERT_NE(watch_port, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string livez = get(watch_port, "/livez");
    stop(watch_pid);
    EXPECT_EQ(livez.rfind("200 ", 0), 0u) << livez;
    EXPECT_NE(livez.find("\"failures\":0"), std::string::npos) << livez;
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ::close(out_pipe[0]);
    fs::remove_all(dir);
    ASSERT_EQ(metrics.status, 0) << metrics.out;
    for (const auto& s : series)
        EXPECT_NE(metrics.out.find("\n" + s), std::string::npos) << "assistd does not export " << s;
}

TEST(DeployManifests, SidecarArgsAreAcceptedByTheHealthcheckBinary) {
    const YAML::Node deployment = find_kind("Deployment", "assistd");
    const YAML::Node sidecar = container(deployment, "healthcheck");
    auto args = sidecar["args"].as<std::vector<std::string>>();
    ASSERT_FALSE(args.empty());
    EXPECT_EQ(args[0], "watch");
    // The listen port is the container's "health" port.
    int listen_port = -1;
    for (size_t i = 0; i + 1 < args.size(); ++i)
        if (args[i] == "--listen") {
            listen_port = std::stoi(args[i + 1].substr(args[i + 1].rfind(':') + 1));
            args[i + 1] = "127.0.0.1:0";  // the test binds anywhere free
        }
    EXPECT_EQ(listen_port, named_port(sidecar, "health"));
    EXPECT_EQ(sidecar["livenessProbe"]["httpGet"]["path"].as<std::string>(), "/status");
    // The deep-liveness overlay points assistd's liveness at the sidecar.
    const std::string overlay = read_file(kDeploy / "k8s" / "overlays" / "deep-liveness" / "kustomization.yaml");
    EXPECT_NE(overlay.find("path: /livez"), std::string::npos);
    EXPECT_NE(overlay.find("port: " + std::to_string(listen_port)), std::string::npos);

    // The binary starts with exactly these arguments (then is stopped).
    std::vector<char*> argv{const_cast<char*>(ASSISTD_HEALTHCHECK_BINARY)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int err_pipe[2];
    ASSERT_EQ(::pipe(err_pipe), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(err_pipe[1], 2);
        ::close(err_pipe[0]);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(err_pipe[1]);
    std::string log;
    char buf[512];
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (log.find("watching") == std::string::npos && std::chrono::steady_clock::now() < until) {
        const ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        log.append(buf, static_cast<size_t>(n));
    }
    ::kill(pid, SIGTERM);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ::close(err_pipe[0]);
    EXPECT_NE(log.find("watching"), std::string::npos) << log;
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << log;
}

TEST(DeployManifests, SidecarReportsADeadTargetAsNotAliveOnceStale) {
    const auto [pid, port] = start_watch({"--target", "http://127.0.0.1:1", "--interval-ms", "100",
                                          "--timeout-ms", "200", "--stale-after-ms", "300"});
    ASSERT_NE(port, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    const std::string livez = get(port, "/livez");
    const std::string status = get(port, "/status");
    stop(pid);
    EXPECT_EQ(livez.rfind("503 ", 0), 0u) << livez;
    EXPECT_NE(livez.find("/healthz: "), std::string::npos) << livez;
    EXPECT_EQ(status.rfind("200 ", 0), 0u) << status;
    EXPECT_NE(status.find("\"alive\":false"), std::string::npos) << status;
}

TEST(DeployManifests, HealthcheckProbeFailsClearlyOnBadTargets) {
    ProcessResult r = run({ASSISTD_HEALTHCHECK_BINARY, "probe", "http://127.0.0.1:1/healthz", "--timeout-ms", "500"});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("127.0.0.1:1"), std::string::npos) << r.out;
    r = run({ASSISTD_HEALTHCHECK_BINARY, "probe", "https://example.invalid/"});
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("only http://"), std::string::npos) << r.out;
    r = run({ASSISTD_HEALTHCHECK_BINARY, "watch", "--interval-ms", "-5"});
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.out.find("positive number of milliseconds"), std::string::npos) << r.out;
}

}  // namespace
