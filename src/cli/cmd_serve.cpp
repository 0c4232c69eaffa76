// `assistd serve`: the OpenAI-compatible server. One YAML config
// (--config FILE) whose keys are the long flag names; a flag given on the
// command line wins over the file. SIGTERM/SIGINT drain: /readyz turns 503,
// new requests get 503, running streams finish within the grace period.
// A repeatable flag (--api-key) is a YAML list; a list item may be a mapping,
// which stands for "name=value,name=value" (see serve/auth.h).
// With --peers the server is a node of a fleet (docs/cluster.md): sessions
// are replicated to their replicas over gRPC, every response names the node
// (X-Assistd-Node) and the drain also hands this node's changes to its peers.
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "cli/serve_kv_standby.h"
#if ASSISTD_HAVE_CDC
#include "cli/serve_knowledge.h"
#endif
#include "cli/model_options.h"
#include "common/clock.h"
#include "serve/auth.h"
#include "serve/http_server.h"
#include "serve/blocking_pool.h"
#include "serve/kv_disk_tier.h"
#include "serve/metrics.h"
#include "serve/openai_routes.h"
#include "serve/rate_limit.h"
#include "serve/scheduler.h"
#include "serve/serve_config.h"
#include "serve/sessions.h"
#include "serve/static_files.h"
#if ASSISTD_HAVE_CLUSTER
#include "cluster/fleet_node.h"
#endif

namespace assistd::cli {
namespace {

struct ServeOptions {
    ModelOptions model;
    std::string config_file;
    std::string host = "127.0.0.1";
    int port = 8080;
    int io_threads = 1;
    size_t max_queue = 256;
    size_t max_running = 16;
    size_t prefill_chunk = 256;
    size_t max_body_bytes = size_t{1} << 20;
    int64_t queue_timeout_ms = 30000;
    double drain_grace_s = 30;
    std::string model_id;
    size_t default_max_tokens = 1024;
    serve::PrecisionPolicyConfig policy;
    bool prefix_cache = true;
    size_t prefix_cache_blocks = 0;      // 0: half of the KV cache
    size_t prefix_cache_sequences = 64;  // sequence slots beyond --max-running for cached prefixes
    size_t prefix_cache_min_tokens = 16;
    std::string state_dir;  // empty: sessions live in a temporary store removed on exit
    std::string web_dir;    // empty: the web/ folder of the source tree, else ./web
    std::vector<std::string> api_keys;  // "sha256=...,tenant=..." each; none: the API is open
    size_t max_messages = 256;
    size_t max_prompt_tokens = 0;
    // The fleet (cluster mode when peers is set).
    std::string node_id;               // empty: drawn once, kept in --state-dir
    std::string peers;                 // "host:port,..." or "dns:NAME:PORT"
    std::string listen_peer = "0.0.0.0:9090";
    std::string advertise_peer;        // empty: the --listen-peer address
    size_t store_threads = 16;
    size_t max_header_bytes = 64 * 1024;
    int header_timeout_ms = 10000;
    std::string kv_disk_dir;          // the prefix cache's disk tier; empty: none
    std::string knowledge_pipeline;   // a pipeline file: CDC into the graph chat requests read
    size_t kv_disk_mib = 4096;
    size_t kv_standby_copies = 2;     // in a fleet: replicas that get each session's new KV after a turn
    size_t kv_standby_mib = 1024;     // peers' standby KV held here at most
    size_t kv_standby_queue_mib = 256;  // standby KV waiting for one peer's stream at most
    std::string metrics_listen;       // host:port of a listener for /metrics alone; empty: the API port serves it
    bool metrics_tenant_labels = true;
    std::string peer_tls_cert, peer_tls_key, peer_tls_ca;
    bool peer_insecure = false;
    size_t max_peer_links = 256;
    int replication_factor = 3;
    int sync_acks = 1;
    bool degraded_writes = false;
    int64_t replication_ack_timeout_ms = 2000;
    int64_t fetch_timeout_ms = 1000;
    int64_t peer_heartbeat_ms = 200;
    int64_t peer_suspect_ms = 1000;
    int64_t anti_entropy_ms = 1000;
    int64_t discovery_interval_ms = 5000;
    int64_t join_wait_ms = 3000;
    double drain_replication_s = 10;
};

// Where the chat page lives when --web-dir is not given: next to the
// binary's source tree (build dirs sit one or two levels below it), else ./web.
std::filesystem::path default_web_dir() {
    std::error_code ec;
    const std::filesystem::path exe_dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
    std::vector<std::filesystem::path> candidates;
    if (!ec) {
        candidates.push_back(exe_dir / ".." / "web");
        candidates.push_back(exe_dir / ".." / ".." / "web");
    }
    candidates.push_back("web");
    return serve::StaticFiles::find_root(candidates);
}

// Applies the YAML file's keys to options not given on the command line.
bool apply_config(CLI::App& cmd, const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    std::stringstream text;
    text << file.rdbuf();
    if (!file.is_open() || file.bad()) {
        // The words yaml-cpp's LoadFile used, which this message has always carried.
        std::fprintf(stderr, "assistd serve: cannot read --config %s: bad file: %s\n", path.c_str(), path.c_str());
        return false;
    }
    auto entries = serve::parse_serve_config(text.str());
    if (!entries.ok()) {
        if (entries.error().code == ErrorCode::kInvalidArgument) {
            std::fprintf(stderr, "assistd serve: %s must be a YAML mapping of option names to values\n", path.c_str());
        } else {
            std::fprintf(stderr, "assistd serve: cannot read --config %s: %s\n", path.c_str(),
                         entries.error().message.c_str());
        }
        return false;
    }
    for (const serve::ServeConfigEntry& entry : *entries) {
        const std::string& key = entry.key;
        CLI::Option* opt = nullptr;
        try {
            opt = cmd.get_option("--" + key);
        } catch (const CLI::OptionNotFound&) {
        }
        if (!opt || key == "config") {
            std::fprintf(stderr, "assistd serve: unknown key '%s' in %s (keys are the long flag names)\n", key.c_str(),
                         path.c_str());
            return false;
        }
        if (opt->count() > 0) continue;  // the command line wins
        if (entry.is_list && opt->get_expected_max() <= 1) {
            std::fprintf(stderr, "assistd serve: '%s' in %s takes one value, not a list\n", key.c_str(), path.c_str());
            return false;
        }
        if (!entry.value_error.empty()) {
            std::fprintf(stderr, "assistd serve: bad value for '%s' in %s: %s\n", key.c_str(), path.c_str(),
                         entry.value_error.c_str());
            return false;
        }
        try {
            for (const std::string& value : entry.values) opt->add_result(value);
            opt->run_callback();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "assistd serve: bad value for '%s' in %s: %s\n", key.c_str(), path.c_str(), e.what());
            return false;
        }
    }
    return true;
}

// Every open stream holds a socket: lift the soft open-file limit to the hard one.
size_t raise_open_file_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit raised = rl;
        raised.rlim_cur = rl.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
    return static_cast<size_t>(rl.rlim_cur);
}

#if ASSISTD_HAVE_CLUSTER
serve::ClusterFigures cluster_figures(cluster::FleetNode& node) {
    serve::ClusterFigures f;
    for (const auto& p : node.peers()) {
        if (p.health == cluster::PeerHealth::kLive) ++f.peers_up;
        if (p.health == cluster::PeerHealth::kSuspect) ++f.peers_suspect;
        if (p.health == cluster::PeerHealth::kDeparted) ++f.peers_departed;
    }
    const auto counts = node.session_counts();
    f.sessions_held = counts.held;
    f.sessions_replicated = counts.replicated;
    const auto st = node.stats();
    f.unacknowledged_sessions = node.unacknowledged();
    f.fetches = st.fetches;
    f.refreshes = st.refreshes;
    f.repairs_pushed = st.repairs_pushed;
    f.repairs_pulled = st.repairs_pulled;
    f.handoffs_confirmed = st.handoffs_confirmed;
    f.deltas_applied = st.deltas_applied;
    f.batches_resent = st.batches_resent;
    f.write_ack_timeouts = st.ack_timeouts;
    f.degraded_writes = st.degraded_acks;
    f.peer_frames_refused = st.frames_unauthorized;
    const auto links = node.links();
    f.peer_links = links.open;
    f.peer_links_refused = links.refused;
    for (const auto& s : node.take_lag_samples()) f.lag.emplace_back(s.seconds, s.operations);
    return f;
}
#endif

int run_serve(const ServeOptions& o, bool precision_given) {
    using namespace assistd::serve;
    if (o.port < 0 || o.port > 65535) {
        std::fprintf(stderr, "assistd serve: --port must be 0..65535\n");
        return 2;
    }
    if (o.model.path.empty()) {
        std::fprintf(stderr, "assistd serve: give --model PATH (or 'model' in --config)\n");
        return 2;
    }
    auto precision = parse_precision(o.model.precision);
    if (!precision) return 2;
    std::vector<ApiKeyConfig> key_configs;
    for (size_t i = 0; i < o.api_keys.size(); ++i) {
        auto key = parse_api_key_spec(o.api_keys[i]);
        if (!key) {
            std::fprintf(stderr, "assistd serve: api key %zu: %s\n", i + 1, key.error().message.c_str());
            return 2;
        }
        key_configs.push_back(std::move(*key));
    }
    auto keys = ApiKeyTable::create(std::move(key_configs));
    if (!keys) {
        std::fprintf(stderr, "assistd serve: %s\n", keys.error().message.c_str());
        return 2;
    }
    // Block the stop signals before any thread starts, so only sigwait sees them.
    const sigset_t signals = block_stop_signals();

    const size_t open_files = raise_open_file_limit();
    if (open_files != 0 && open_files < o.max_queue + o.max_running + 64)
        std::fprintf(stderr,
                     "assistd serve: warning: the open-file limit is %zu, below --max-queue + --max-running; "
                     "at most %zu connections are open at once, further clients wait in the listen backlog "
                     "(raise the hard limit: ulimit -Hn)\n",
                     open_files, connections_for_open_file_limit(open_files));

    auto model = load_model(o.model, "serve",
                            std::max<size_t>(1, o.max_running) + (o.prefix_cache ? o.prefix_cache_sequences : 0));
    if (!model) return 2;

    // Declared before the fleet so that they outlive it: peers' frames reach
    // the store until the fleet's transport is gone.
    ServeKvStandby kv_standby;
    // One node (a local store) or a node of a fleet (the replicated store).
    std::unique_ptr<ServerSessionStore> single;
    state::SessionStore* session_store = nullptr;
#if ASSISTD_HAVE_CLUSTER
    std::unique_ptr<cluster::FleetNode> fleet;
    if (!o.peers.empty()) {
        cluster::FleetNodeOptions fo;
        fo.state_dir = o.state_dir;
        fo.node_id = o.node_id;
        fo.peers = o.peers;
        fo.listen_address = o.listen_peer;
        fo.advertise_address = o.advertise_peer;
        fo.tls = {o.peer_tls_cert, o.peer_tls_key, o.peer_tls_ca};
        fo.insecure = o.peer_insecure;
        fo.max_peer_links = o.max_peer_links;
        fo.replication.replication_factor = o.replication_factor;
        fo.replication.sync_acks = o.sync_acks;
        fo.replication.degraded_writes = o.degraded_writes;
        fo.replication.heartbeat_interval_ms = o.peer_heartbeat_ms;
        fo.replication.suspect_after_ms = o.peer_suspect_ms;
        fo.replication.anti_entropy_interval_ms = o.anti_entropy_ms;
        fo.replication.discovery_interval_ms = o.discovery_interval_ms;
        fo.write_ack_timeout_ms = o.replication_ack_timeout_ms;
        fo.fetch_timeout_ms = o.fetch_timeout_ms;
        fo.join_wait_ms = o.join_wait_ms;
        fo.kv_standby.copies = o.prefix_cache ? o.kv_standby_copies : 0;
        fo.kv_standby.max_queued_bytes = o.kv_standby_queue_mib << 20;
        auto node = cluster::FleetNode::start(fo, SystemClock::instance());
        if (!node) {
            std::fprintf(stderr, "assistd serve: %s\n", node.error().message.c_str());
            return 2;
        }
        fleet = std::move(*node);
        session_store = &fleet->store();
    }
#else
    if (!o.peers.empty()) {
        std::fprintf(stderr,
                     "assistd serve: --peers needs the gRPC peer transport, which this build lacks "
                     "(run scripts/install-deps.sh and rebuild)\n");
        return 2;
    }
#endif
    if (!session_store) {
        auto opened = ServerSessionStore::open(o.state_dir, SystemClock::instance());
        if (!opened) {
            std::fprintf(stderr, "assistd serve: %s\n", opened.error().message.c_str());
            return 2;
        }
        single = std::move(*opened);
        session_store = &single->store();
    }
    std::filesystem::path web_dir = o.web_dir.empty() ? default_web_dir() : std::filesystem::path(o.web_dir);
    std::error_code web_ec;
    if (!o.web_dir.empty() && !std::filesystem::is_directory(web_dir, web_ec)) {
        std::fprintf(stderr, "assistd serve: --web-dir %s is not a directory\n", o.web_dir.c_str());
        return 2;
    }
    std::optional<StaticFiles> web;
    if (!web_dir.empty()) web.emplace(web_dir);

    SchedulerConfig sc;
    sc.max_queue = o.max_queue;
    sc.max_running = o.max_running;
    sc.max_batch_tokens = o.model.batch_tokens;
    sc.prefill_chunk_tokens = std::min(o.prefill_chunk, o.model.batch_tokens);
    if (precision_given) sc.fixed_precision = *precision;
    sc.policy = o.policy;
    sc.prefix_cache = o.prefix_cache && o.prefix_cache_sequences > 0;
    sc.prefix_cache_blocks = o.prefix_cache_blocks;
    sc.prefix_cache_min_tokens = o.prefix_cache_min_tokens;
    sc.prepare_weights_at_start = true;
    std::unique_ptr<KvDiskTier> kv_disk;
    if (!o.kv_disk_dir.empty()) {
        KvDiskTierConfig kc;
        kc.dir = o.kv_disk_dir;
        kc.max_bytes = static_cast<uint64_t>(o.kv_disk_mib) << 20;
        kc.min_match_tokens = o.prefix_cache_min_tokens;
        if (!sc.prefix_cache) {
            std::fprintf(stderr, "assistd serve: --kv-disk-dir needs the prefix cache (--prefix-cache true)\n");
            return 2;
        }
        auto tier = KvDiskTier::open(kc, model->kv_fingerprint());
        if (!tier) {
            std::fprintf(stderr, "assistd serve: --kv-disk-dir: %s\n", tier.error().message.c_str());
            return 2;
        }
        kv_disk = std::move(*tier);
        sc.kv_disk = kv_disk.get();
        const auto d = kv_disk->stats();
        std::fprintf(stderr, "assistd serve: KV disk tier in %s, up to %zu MiB; %zu conversations' KV found there\n",
                     o.kv_disk_dir.c_str(), o.kv_disk_mib, d.entries);
    }
    // Standby KV: each session turn's new KV goes to the session's standby
    // replicas (a fleet), and theirs comes here, so a turn after a failover
    // imports the history instead of prefilling it; with --kv-disk-dir the
    // node's own sessions' KV is written through to disk as well, so a
    // restart (even after a SIGKILL) finds it.
    if (sc.prefix_cache) {
        cluster::FleetNode* peers = nullptr;
#if ASSISTD_HAVE_CLUSTER
        if (fleet && o.kv_standby_copies > 0) peers = fleet.get();
#endif
        ServeKvStandbyOptions ko;
        ko.store.max_bytes = static_cast<uint64_t>(o.kv_standby_mib) << 20;
        ko.store.min_match_tokens = o.prefix_cache_min_tokens;
        if (!o.kv_disk_dir.empty()) ko.store.dir = (std::filesystem::path(o.kv_disk_dir) / "sessions").string();
        const auto& mi = model->info();
        ko.bytes_per_token = 2 * mi.n_layer * mi.n_head_kv * mi.head_dim * (o.model.kv_type == "f32" ? 4 : 2);
        auto made = make_serve_kv_standby(ko, model->kv_fingerprint(), peers);
        if (!made) {
            std::fprintf(stderr, "assistd serve: --kv-disk-dir: %s\n", made.error().message.c_str());
            return 2;
        }
        kv_standby = std::move(*made);
        sc.kv_standby_store = kv_standby.store.get();
        sc.kv_standby_shipper = kv_standby.shipper.get();
        if (kv_standby.on_disk)
            std::fprintf(stderr, "assistd serve: sessions' KV written through to %s, up to %zu MiB; %zu sessions' KV found there\n",
                         ko.store.dir.c_str(), o.kv_standby_mib, kv_standby.store->stats().sessions);
    }
    ServeMetrics metrics(o.metrics_tenant_labels);
    Scheduler scheduler(*model, sc, SystemClock::instance(), &metrics);
    scheduler.start();

    OpenAiRoutesConfig rc;
    rc.model_id = o.model_id.empty() ? std::filesystem::path(o.model.path).stem().string() : o.model_id;
    rc.default_max_tokens = o.default_max_tokens;
    rc.queue_timeout_ms = o.queue_timeout_ms;
    rc.seed = static_cast<uint64_t>(SystemClock::instance().now_mono_ns());
    rc.max_messages = o.max_messages;
    rc.max_prompt_tokens = o.max_prompt_tokens;
    std::string node_header;  // X-Assistd-Node on every response of a fleet node
    // Not ready while the weights are prepared: a balancer sends nothing to a
    // node whose first request would pay the conversion.
    rc.not_ready = [&scheduler]() -> std::string { return scheduler.warmed() ? "" : "warming up"; };
#if ASSISTD_HAVE_CLUSTER
    if (fleet) {
        rc.not_ready = [node = fleet.get(), &scheduler]() -> std::string {
            if (!node->joined()) return "joining";
            return scheduler.warmed() ? "" : "warming up";
        };
        rc.local_sessions = &fleet->local_store();
        node_header = fleet->node_name();
        metrics.set_cluster_source([node = fleet.get()] { return cluster_figures(*node); });
    }
#endif
    RateLimiter limiter(*keys, SystemClock::instance());
#if ASSISTD_HAVE_CLUSTER
    // A key's limits hold across the fleet: each charge goes to the peers, theirs come here.
    struct PeerUsage {
        cluster::FleetNode* node = nullptr;
        ~PeerUsage() {
            if (node) node->rate_usage().set_handler(nullptr);  // before the limiter goes
        }
    } peer_usage;
    if (fleet) {
        peer_usage.node = fleet.get();
        limiter.set_usage_sink([node = fleet.get()](const Sha256Digest& key, double requests, double tokens) {
            node->rate_usage().broadcast({cluster::RateUsage{key, requests, tokens}});
        });
        fleet->rate_usage().set_handler([&limiter](const std::vector<cluster::RateUsage>& usage, cluster::NodeId) {
            for (const auto& u : usage) limiter.apply_peer_usage(u.key, u.requests, u.tokens);
        });
    }
#endif
#if ASSISTD_HAVE_CDC
    std::unique_ptr<ServeKnowledge> knowledge;
    if (!o.knowledge_pipeline.empty()) {
        auto started = ServeKnowledge::start(o.knowledge_pipeline, o.state_dir);
        if (!started.ok()) {
            std::fprintf(stderr, "assistd serve: --knowledge-pipeline: %s\n", started.error().message.c_str());
            return 2;
        }
        knowledge = std::move(*started);
        rc.knowledge = &knowledge->graph();
    }
#else
    if (!o.knowledge_pipeline.empty()) {
        std::fprintf(stderr, "assistd serve: --knowledge-pipeline: this build has no change data capture\n");
        return 2;
    }
#endif
    // Session-store work (fsyncs; in a fleet, replica acks, fetches, quorum reads) waits here, not on I/O threads.
    BlockingPool store_work(std::max<size_t>(1, o.store_threads));
    rc.blocking = &store_work;
    rc.serve_metrics = o.metrics_listen.empty();
    OpenAiRoutes routes(*model, scheduler, metrics, SystemClock::instance(), rc, session_store,
                        web ? &*web : nullptr, {&*keys, &limiter});

    HttpServerConfig hc;
    hc.host = o.host;
    hc.port = static_cast<uint16_t>(o.port);
    hc.io_threads = o.io_threads;
    hc.max_body_bytes = o.max_body_bytes;
    hc.max_header_bytes = o.max_header_bytes;
    hc.header_timeout_ms = o.header_timeout_ms;
    hc.blocking = &store_work;
    if (open_files != 0) hc.max_connections = connections_for_open_file_limit(open_files);
    auto server = HttpServer::start(hc, [&routes, &node_header](const HttpRequest& r) {
        HttpResponse response = routes.handle(r);
        if (node_header.empty()) return response;
        if (response.deferred) {  // the header goes on what the deferred work answers
            response.deferred = [inner = std::move(response.deferred), &node_header] {
                HttpResponse answered = inner();
                answered.headers.emplace_back("X-Assistd-Node", node_header);
                return answered;
            };
        } else {
            response.headers.emplace_back("X-Assistd-Node", node_header);
        }
        return response;
    });
    if (!server) {
        std::fprintf(stderr, "assistd serve: %s\n", server.error().message.c_str());
        return 2;
    }
    // /metrics on an address of its own (an operators' network), so it need not face clients.
    std::unique_ptr<HttpServer> metrics_server;
    if (!o.metrics_listen.empty()) {
        HttpServerConfig mc;
        const auto colon = o.metrics_listen.rfind(':');
        int metrics_port = -1;
        if (colon != std::string::npos && colon > 0) {
            const std::string port_text = o.metrics_listen.substr(colon + 1);
            if (!port_text.empty() && port_text.size() <= 5 &&
                port_text.find_first_not_of("0123456789") == std::string::npos)
                metrics_port = std::stoi(port_text);
        }
        if (metrics_port < 0 || metrics_port > 65535) {
            std::fprintf(stderr, "assistd serve: --metrics-listen '%s' must be host:port\n", o.metrics_listen.c_str());
            return 2;
        }
        mc.host = o.metrics_listen.substr(0, colon);
        if (mc.host.size() >= 2 && mc.host.front() == '[') mc.host = mc.host.substr(1, mc.host.size() - 2);
        mc.port = static_cast<uint16_t>(metrics_port);
        mc.io_threads = 1;
        mc.max_connections = 64;
        auto started = HttpServer::start(mc, [&metrics, &scheduler, &node_header](const HttpRequest& r) {
            HttpResponse res;
            if (r.method == "GET" && r.target.substr(0, r.target.find('?')) == "/metrics") {
                res.content_type = "text/plain; version=0.0.4";
                res.body = metrics.render(scheduler.stats());
            } else {
                res.status = 404;
                res.body = R"({"error":{"message":"this address serves GET /metrics only","type":"invalid_request_error","param":null,"code":"unknown_url"}})";
            }
            if (!node_header.empty()) res.headers.emplace_back("X-Assistd-Node", node_header);
            return res;
        });
        if (!started) {
            std::fprintf(stderr, "assistd serve: --metrics-listen: %s\n", started.error().message.c_str());
            return 2;
        }
        metrics_server = std::move(*started);
        std::fprintf(stderr, "assistd serve: metrics on http://%s:%u/metrics (not on the API port)\n", mc.host.c_str(),
                     metrics_server->port());
    }
    std::fprintf(stderr, "assistd serve: model '%s' (%s, %zu ctx) on http://%s:%u  precision %s\n", rc.model_id.c_str(),
                 model->info().arch_name.c_str(), model->info().n_ctx, o.host.c_str(), (*server)->port(),
                 precision_given ? engine::precision_name(*precision) : "by policy");
    std::fprintf(stderr, "assistd serve: sessions in %s%s; chat page %s\n",
                 single ? single->path().c_str() : o.state_dir.c_str(),
                 single && single->temporary() ? " (temporary: give --state-dir to keep them)" : "",
                 web ? web->root().c_str() : "off (no web/ folder found: give --web-dir)");
#if ASSISTD_HAVE_CLUSTER
    if (fleet)
        std::fprintf(stderr,
                     "assistd serve: fleet node %s (incarnation %llu) at %s (peer port %d); peers %s; "
                     "replication factor %d, sync acks %d (degraded writes %s)\n",
                     fleet->node_name().c_str(), static_cast<unsigned long long>(fleet->identity().incarnation),
                     fleet->advertise_address().c_str(), fleet->peer_port(), o.peers.c_str(), o.replication_factor,
                     o.sync_acks, o.degraded_writes ? "on" : "off");
#endif
    if (keys->empty()) {
        std::fprintf(stderr,
                     "assistd serve: API open: no API keys configured, every caller is the tenant \"\" "
                     "(give --api-key to require keys)\n");
    } else {
        std::string tenants;
        for (const auto& t : keys->tenants()) tenants += (tenants.empty() ? "" : ", ") + t;
        std::fprintf(stderr, "assistd serve: API keys required: %zu key%s for tenants %s\n", keys->size(),
                     keys->size() == 1 ? "" : "s", tenants.c_str());
    }
    if (sc.prefix_cache)
        std::fprintf(stderr, "assistd serve: prefix cache up to %zu of %zu KV blocks, %zu sequences\n",
                     sc.prefix_cache_blocks ? sc.prefix_cache_blocks : std::max<size_t>(1, model->total_kv_blocks() / 2),
                     model->total_kv_blocks(), o.prefix_cache_sequences);
    else
        std::fprintf(stderr, "assistd serve: prefix cache off\n");

    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "assistd serve: %s received, draining (grace %.0f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 o.drain_grace_s);
    routes.set_draining(true);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.drain_grace_s);
    while ((scheduler.in_flight() > 0 || (*server)->active_requests() > 0) && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const size_t left = scheduler.in_flight();
    // No request touches the store after this: the answers of requests cut off by
    // the grace are stored (or dropped) before the node hands its sessions over.
    (*server)->stop();
    if (metrics_server) metrics_server->stop();
    store_work.stop();
#if ASSISTD_HAVE_CLUSTER
    if (fleet) {
        // Every answer is stored now: hand this node's sessions to the others
        // and wait (bounded) until its changes are acknowledged by peers.
        const size_t unacked =
            fleet->leave_and_flush(static_cast<int64_t>(o.drain_replication_s * 1000));
        if (unacked == 0)
            std::fprintf(stderr, "assistd serve: left the fleet; its replicas acknowledged every change and hold every session\n");
        else
            std::fprintf(stderr,
                         "assistd serve: left the fleet with %zu sessions not yet confirmed by all their live "
                         "replicas after %.0f s (changes acknowledged to clients are on --sync-acks replicas "
                         "already; the rest stays in --state-dir)\n",
                         unacked, o.drain_replication_s);
        // Peers take this node out of placement now rather than after --peer-suspect-ms.
        const size_t unaware = fleet->announce_departure(1000);
        if (unaware == 0)
            std::fprintf(stderr, "assistd serve: every live peer acknowledged the departure\n");
        else
            std::fprintf(stderr,
                         "assistd serve: %zu live peers did not acknowledge the departure within 1 s "
                         "(they notice it after --peer-suspect-ms)\n",
                         unaware);
    }
#endif
    scheduler.stop();
    std::fprintf(stderr, "assistd serve: stopped (%zu requests cut off by the grace period)\n", left);
    return 0;
}

}  // namespace

void register_serve(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<ServeOptions>();
    CLI::App* cmd = app.add_subcommand("serve", "Serve the OpenAI-compatible API (chat completions, completions, models)");
    add_model_options(*cmd, o->model);
    cmd->get_option("--model")->required(false);
    cmd->add_option("--config", o->config_file, "YAML file whose keys are these long option names");
    cmd->add_option("--host", o->host, "Address to bind")->capture_default_str();
    cmd->add_option("--port", o->port, "Port to bind (0: any free port)")->capture_default_str();
    cmd->add_option("--io-threads", o->io_threads, "HTTP I/O threads")->capture_default_str();
    cmd->add_option("--metrics-listen", o->metrics_listen,
                    "host:port of a listener that serves GET /metrics alone (the API port then does not); "
                    "default: /metrics on the API port");
    cmd->add_option("--metrics-tenant-labels", o->metrics_tenant_labels,
                    "Label per-tenant series with the tenant's name (false: tenant=\"all\") (true/false)")
        ->capture_default_str();
    cmd->add_option("--store-threads", o->store_threads,
                    "Threads that run requests' session-store work (fsyncs; in a fleet, waits for replicas) "
                    "while the HTTP I/O threads go on serving")
        ->capture_default_str();
    cmd->add_option("--max-queue", o->max_queue, "Requests waiting before new ones get 429")->capture_default_str();
    cmd->add_option("--max-running", o->max_running, "Requests decoding at once")->capture_default_str();
    cmd->add_option("--prefill-chunk", o->prefill_chunk, "Prompt tokens per step across prefills")->capture_default_str();
    cmd->add_option("--max-body-bytes", o->max_body_bytes, "Larger request bodies get 413")->capture_default_str();
    cmd->add_option("--max-header-bytes", o->max_header_bytes, "Larger request headers get 431")->capture_default_str();
    cmd->add_option("--header-timeout-ms", o->header_timeout_ms,
                    "A request's headers must arrive within this long (slow clients get 408)")
        ->capture_default_str()
        ->check(CLI::Range(1, 3600000));
    cmd->add_option("--queue-timeout-ms", o->queue_timeout_ms, "Queued longer than this: 503")->capture_default_str();
    cmd->add_option("--drain-grace-s", o->drain_grace_s, "Seconds running streams get on SIGTERM")->capture_default_str();
    cmd->add_option("--model-id", o->model_id, "Model name clients use (default: the file name)");
    cmd->add_option("--default-max-tokens", o->default_max_tokens, "max_tokens when a request gives none")
        ->capture_default_str();
    cmd->add_option("--state-dir", o->state_dir,
                    "Directory of the durable session store (default: a temporary one, removed on exit)");
    cmd->add_option("--web-dir", o->web_dir, "Directory of the chat page served at / (default: the source tree's web/)");
    cmd->add_option("--api-key,--api-keys", o->api_keys,
                    "An API key, repeatable: sha256=<hex of `assistd apikey hash`>,tenant=NAME"
                    "[,requests-per-minute=N][,tokens-per-minute=N][,precision=fp32|fp16|bf16]; none: the API is open");
    cmd->add_option("--max-messages", o->max_messages, "Messages one chat request may carry (0: no limit)")
        ->capture_default_str();
    cmd->add_option("--max-prompt-tokens", o->max_prompt_tokens, "Prompt tokens one request may have (0: the context)")
        ->capture_default_str();
    cmd->add_option("--policy-slow-latency-s", o->policy.slow_latency_s, "p95 step latency above which (with low throughput) FP16 runs")
        ->capture_default_str();
    cmd->add_option("--policy-slow-throughput-rps", o->policy.slow_throughput_rps, "throughput below which FP16 may run")
        ->capture_default_str();
    cmd->add_option("--policy-fast-latency-s", o->policy.fast_latency_s, "p95 step latency below which (with high throughput) FP32 runs")
        ->capture_default_str();
    cmd->add_option("--policy-fast-throughput-rps", o->policy.fast_throughput_rps, "throughput above which FP32 may run")
        ->capture_default_str();
    cmd->add_option("--policy-hold-evaluations", o->policy.hold_evaluations, "evaluations a new choice must win in a row")
        ->capture_default_str();
    cmd->add_option("--policy-min-dwell-s", o->policy.min_dwell_s, "seconds between two precision switches")
        ->capture_default_str();
    cmd->add_option("--prefix-cache", o->prefix_cache,
                    "Keep finished requests' KV so a prompt sharing their prefix (a session's next turn) "
                    "prefills only the rest (true/false)")
        ->capture_default_str();
    cmd->add_option("--prefix-cache-blocks", o->prefix_cache_blocks,
                    "KV blocks the prefix cache may hold (0: half of the KV cache)")
        ->capture_default_str();
    cmd->add_option("--prefix-cache-sequences", o->prefix_cache_sequences,
                    "Cached sequences kept beside the --max-running ones")
        ->capture_default_str();
    cmd->add_option("--prefix-cache-min-tokens", o->prefix_cache_min_tokens,
                    "Shortest common prefix worth reusing")
        ->capture_default_str();
    cmd->add_option("--knowledge-pipeline", o->knowledge_pipeline,
                    "A pipeline file (docs/knowledge.md): its change data capture runs inside the server, into the "
                    "graph chat requests read with 'knowledge'");
    cmd->add_option("--kv-disk-dir", o->kv_disk_dir,
                    "Directory where the KV of conversations that leave the prefix cache is kept, so a returning "
                    "conversation (or this node after a restart) reads it back instead of prefilling; none: off");
    cmd->add_option("--kv-disk-mib", o->kv_disk_mib, "Budget of --kv-disk-dir in MiB (least recently used out first)")
        ->capture_default_str();
    cmd->add_option("--kv-standby-copies", o->kv_standby_copies,
                    "In a fleet: replicas of each session that receive its new KV after every turn, so the "
                    "node that takes the session over imports the history instead of prefilling it; 0: off")
        ->capture_default_str();
    cmd->add_option("--kv-standby-mib", o->kv_standby_mib,
                    "Sessions' standby KV this node keeps at most, in MiB: peers' in RAM, or with --kv-disk-dir "
                    "peers' and its own on disk (sessions updated longest ago go first)")
        ->capture_default_str();
    cmd->add_option("--kv-standby-queue-mib", o->kv_standby_queue_mib,
                    "Standby KV waiting to be sent to one peer at most, in MiB (beyond it a session is resent in "
                    "full after its next turn)")
        ->capture_default_str();
    cmd->add_option("--node-id", o->node_id,
                    "This node's id in a fleet: 1-16 hex digits, or a name such as the pod name (hashed); "
                    "default: drawn once and kept in --state-dir");
    cmd->add_option("--peers", o->peers,
                    "The fleet: host:port,... of the peers' --listen-peer, or dns:NAME:PORT (every address "
                    "of NAME, e.g. a headless Service); none: a single node");
    cmd->add_option("--listen-peer", o->listen_peer, "Address the peer replication (gRPC) binds, host:port")
        ->capture_default_str();
    cmd->add_option("--advertise-peer", o->advertise_peer,
                    "Address peers reach this node at, host:port (default: --listen-peer; required when that "
                    "binds 0.0.0.0)");
    cmd->add_option("--peer-tls-cert", o->peer_tls_cert,
                    "PEM certificate this node presents to its peers; it names the node in a URI SAN "
                    "assistd-node:<node id or pod name> (docs/trust.md)");
    cmd->add_option("--peer-tls-key", o->peer_tls_key, "PEM private key of --peer-tls-cert");
    cmd->add_option("--peer-tls-ca", o->peer_tls_ca,
                    "PEM CA every peer certificate must chain to (the files are re-read every minute)");
    cmd->add_option("--peer-insecure", o->peer_insecure,
                    "Plaintext peers that prove nothing: only on a network the fleet alone can reach "
                    "(true/false)")
        ->capture_default_str();
    cmd->add_option("--max-peer-links", o->max_peer_links,
                    "Outgoing peer streams at most (each a thread); frames for more addresses are dropped")
        ->capture_default_str();
    cmd->add_option("--replication-factor", o->replication_factor, "Replicas of each session (all nodes when fewer)")
        ->capture_default_str();
    cmd->add_option("--sync-acks", o->sync_acks,
                    "Replicas besides this node that must hold a change before it is acknowledged (0..R-1)")
        ->capture_default_str();
    cmd->add_option("--degraded-writes", o->degraded_writes,
                    "With fewer peers reachable than --sync-acks (a partition), acknowledge changes without them "
                    "and serve the sessions held here from this copy, instead of 503; answers may then miss a "
                    "change acknowledged elsewhere (true/false)")
        ->capture_default_str();
    cmd->add_option("--replication-ack-timeout-ms", o->replication_ack_timeout_ms,
                    "A change waits this long for --sync-acks replicas, else 503")
        ->capture_default_str();
    cmd->add_option("--fetch-timeout-ms", o->fetch_timeout_ms,
                    "A read waits this long for the other nodes' answers it needs (then 503)")
        ->capture_default_str();
    cmd->add_option("--peer-heartbeat-ms", o->peer_heartbeat_ms, "Heartbeats to peers every this many ms")
        ->capture_default_str();
    cmd->add_option("--peer-suspect-ms", o->peer_suspect_ms, "A peer not heard from this long is suspect")
        ->capture_default_str();
    cmd->add_option("--anti-entropy-ms", o->anti_entropy_ms, "Peers compare what they hold every this many ms")
        ->capture_default_str();
    cmd->add_option("--discovery-interval-ms", o->discovery_interval_ms, "--peers is re-resolved every this many ms")
        ->capture_default_str();
    cmd->add_option("--join-wait-ms", o->join_wait_ms,
                    "/readyz waits for every discovered peer to answer, at most this long after start")
        ->capture_default_str();
    cmd->add_option("--drain-replication-s", o->drain_replication_s,
                    "On SIGTERM, seconds to wait for peers to acknowledge this node's last changes")
        ->capture_default_str();
    cmd->callback([o, cmd, &exit_code] {
        const bool precision_on_cli = cmd->get_option("--precision")->count() > 0;
        if (!o->config_file.empty() && !apply_config(*cmd, o->config_file)) {
            exit_code = 2;
            return;
        }
        exit_code = run_serve(*o, cmd->get_option("--precision")->count() > 0 || precision_on_cli);
    });
}

}  // namespace assistd::cli
