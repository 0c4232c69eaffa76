#pragma once
// The server's Prometheus metrics (prometheus-cpp core, text format served on
// our own /metrics). Scheduler figures come in once per decode step through
// SchedulerObserver; gauges are read from SchedulerStats at scrape time.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "serve/scheduler.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace assistd::serve {

// A fleet node's replication figures (cluster/), read at scrape time; the
// serve layer sees numbers only.
struct ClusterFigures {
    size_t peers_up = 0;       // live peers
    size_t peers_suspect = 0;  // not heard from lately
    size_t peers_departed = 0;  // announced their leave (a drain)
    size_t sessions_held = 0;        // live sessions stored here
    size_t sessions_replicated = 0;  // ... of which placement makes this node a replica
    size_t unacknowledged_sessions = 0;
    uint64_t fetches = 0;  // fetch-on-miss
    uint64_t refreshes = 0;  // reads that heard from other replicas first (quorum, or a copy outside the set)
    uint64_t repairs_pushed = 0, repairs_pulled = 0;
    uint64_t handoffs_confirmed = 0;
    uint64_t deltas_applied = 0;  // session deltas received from peers and applied (duplicates too)
    uint64_t batches_resent = 0;
    uint64_t write_ack_timeouts = 0;
    uint64_t degraded_writes = 0;  // acknowledged with suspect replicas not waited for
    size_t peer_links = 0;               // outgoing peer streams open
    uint64_t peer_links_refused = 0;     // frames dropped: the cap on peer streams was reached
    uint64_t peer_frames_refused = 0;    // frames from a sender that is not who or where it says
    // Acknowledged batches since the last scrape: seconds in flight, CRDT operations carried.
    std::vector<std::pair<double, uint64_t>> lag;
};

class ServeMetrics final : public SchedulerObserver {
public:
    // tenant_labels false: the per-tenant series carry tenant="all", so a
    // scrape does not list the tenants (who the customers are).
    explicit ServeMetrics(bool tenant_labels = true);
    ~ServeMetrics() override;

    void count_request(std::string_view route, int status);
    // Tenants come from the key configuration, so these labels stay bounded.
    // register_tenants exports their zeros before the first request.
    void register_tenants(const std::vector<std::string>& tenants);
    void count_tenant_request(std::string_view tenant, int status);
    void count_rate_limited(std::string_view tenant, std::string_view limit);  // limit: "requests" or "tokens"
    // The precision a tenant's request was pinned to ("policy": none).
    void count_tenant_precision(std::string_view tenant, std::string_view precision);
    void on_step(const StepReport& report) override;
    void on_finish(const FinishReport& report) override;
    void on_precision_switch(engine::Precision from, engine::Precision to) override;

    // A fleet node: exports the cluster metrics, read from `source` at each
    // scrape. Call before serving.
    void set_cluster_source(std::function<ClusterFigures()> source);

    // The Prometheus text exposition, gauges refreshed from `stats`.
    std::string render(const SchedulerStats& stats);

private:
    std::string tenant_label(std::string_view tenant) const { return tenant_labels_ ? std::string(tenant) : "all"; }

    bool tenant_labels_;
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter>* requests_;
    prometheus::Family<prometheus::Counter>* precision_switches_;
    prometheus::Family<prometheus::Counter>* tenant_requests_;
    prometheus::Family<prometheus::Counter>* rate_limited_;
    prometheus::Family<prometheus::Counter>* tenant_precision_;
    prometheus::Family<prometheus::Counter>* steps_by_precision_;
    prometheus::Family<prometheus::Gauge>* precision_;
    prometheus::Histogram* inference_latency_;
    prometheus::Histogram* ttft_;
    prometheus::Histogram* recovery_ttft_standby_;
    prometheus::Histogram* recovery_ttft_disk_;
    prometheus::Histogram* inter_token_;
    prometheus::Histogram* step_seconds_;
    prometheus::Counter* tokens_generated_;
    prometheus::Gauge* queue_depth_;
    prometheus::Gauge* running_;
    prometheus::Gauge* batch_size_;
    prometheus::Gauge* kv_blocks_in_use_;
    prometheus::Gauge* kv_blocks_total_;
    prometheus::Gauge* prefix_cache_sequences_;
    prometheus::Gauge* prefix_cache_blocks_;
    // Scheduler totals, carried into counters by their growth since the last scrape.
    struct TotalCounter {
        prometheus::Counter* counter = nullptr;
        uint64_t seen = 0;
        void advance(uint64_t total);
    };
    std::function<ClusterFigures()> cluster_source_;
    prometheus::Gauge* peers_up_ = nullptr;
    prometheus::Gauge* peers_suspect_ = nullptr;
    prometheus::Gauge* peers_departed_ = nullptr;
    prometheus::Gauge* sessions_local_ = nullptr;
    prometheus::Gauge* sessions_replicated_ = nullptr;
    prometheus::Gauge* unacknowledged_sessions_ = nullptr;
    prometheus::Gauge* peer_links_ = nullptr;
    prometheus::Histogram* replication_lag_seconds_ = nullptr;
    prometheus::Histogram* replication_lag_operations_ = nullptr;
    TotalCounter fetches_, refreshes_, repairs_pushed_, repairs_pulled_, handoffs_, batches_resent_, write_ack_timeouts_,
        deltas_applied_, degraded_writes_, peer_links_refused_, peer_frames_refused_;
    std::mutex totals_mu_;
    TotalCounter prefix_cache_hits_, prefix_cache_misses_, prefix_cache_reused_tokens_, prefix_cache_evictions_,
        prompt_tokens_prefilled_, kv_disk_hits_, kv_disk_tokens_, kv_disk_refused_, kv_standby_hits_,
        kv_standby_tokens_, kv_standby_refused_, kv_standby_gaps_, kv_standby_sent_bytes_, kv_standby_sent_tokens_,
        kv_standby_send_dropped_, kv_standby_received_bytes_;
    prometheus::Counter* kv_standby_export_seconds_ = nullptr;
    double kv_standby_export_seconds_seen_ = 0;
    prometheus::Gauge* kv_standby_bytes_ = nullptr;
    prometheus::Gauge* kv_standby_sessions_ = nullptr;
    prometheus::Gauge* kv_disk_bytes_ = nullptr;
    prometheus::Gauge* kv_disk_entries_ = nullptr;
};

}  // namespace assistd::serve
