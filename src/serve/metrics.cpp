#include "serve/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cstdio>

namespace assistd::serve {

namespace {
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                 0.5,   1,    2.5,   5,    10,  30};
const prometheus::Histogram::BucketBoundaries kTokenBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                               0.05,   0.1,   0.25,   0.5,   1};
const engine::Precision kPrecisions[] = {engine::Precision::kNative, engine::Precision::kFP32,
                                         engine::Precision::kFP16, engine::Precision::kBF16};
}  // namespace

ServeMetrics::ServeMetrics(bool tenant_labels)
    : tenant_labels_(tenant_labels), registry_(std::make_shared<prometheus::Registry>()) {
    using namespace prometheus;
    requests_ = &BuildCounter()
                     .Name("assistd_http_requests_total")
                     .Help("HTTP requests answered, by route and status")
                     .Register(*registry_);
    precision_switches_ = &BuildCounter()
                               .Name("assistd_precision_switches_total")
                               .Help("Precision policy switches, by new precision")
                               .Register(*registry_);
    tenant_requests_ = &BuildCounter()
                            .Name("assistd_tenant_requests_total")
                            .Help("API requests answered, by tenant (from the key configuration) and status")
                            .Register(*registry_);
    rate_limited_ = &BuildCounter()
                         .Name("assistd_rate_limited_total")
                         .Help("Requests refused with 429 by a per-key rate limit, by tenant and limit")
                         .Register(*registry_);
    tenant_precision_ = &BuildCounter()
                             .Name("assistd_tenant_precision_requests_total")
                             .Help("Generations admitted, by tenant and the precision they were pinned to "
                                   "(by the request or the tenant's default; policy: none)")
                             .Register(*registry_);
    steps_by_precision_ = &BuildCounter()
                               .Name("assistd_decode_steps_total")
                               .Help("Batched decode steps, by the precision they ran at")
                               .Register(*registry_);
    precision_ = &BuildGauge()
                      .Name("assistd_precision")
                      .Help("1 for the precision the policy currently runs batches at")
                      .Register(*registry_);
    inference_latency_ = &BuildHistogram()
                              .Name("assistd_inference_latency_seconds")
                              .Help("Time from a request's submission to its last token")
                              .Register(*registry_)
                              .Add({}, kLatencyBuckets);
    ttft_ = &BuildHistogram()
                 .Name("assistd_time_to_first_token_seconds")
                 .Help("Time from submission to the first generated token")
                 .Register(*registry_)
                 .Add({}, kLatencyBuckets);
    auto& recovery = BuildHistogram()
                         .Name("assistd_kv_recovery_time_to_first_token_seconds")
                         .Help("Time to the first token of requests whose prefix was imported instead of prefilled "
                               "(tier: standby, a peer's copy after a failover; disk, the KV disk tier)")
                         .Register(*registry_);
    recovery_ttft_standby_ = &recovery.Add({{"tier", "standby"}}, kLatencyBuckets);
    recovery_ttft_disk_ = &recovery.Add({{"tier", "disk"}}, kLatencyBuckets);
    inter_token_ = &BuildHistogram()
                        .Name("assistd_inter_token_seconds")
                        .Help("Time between consecutive tokens of one request")
                        .Register(*registry_)
                        .Add({}, kTokenBuckets);
    step_seconds_ = &BuildHistogram()
                         .Name("assistd_decode_step_seconds")
                         .Help("Duration of one batched decode step")
                         .Register(*registry_)
                         .Add({}, kTokenBuckets);
    tokens_generated_ = &BuildCounter()
                             .Name("assistd_tokens_generated_total")
                             .Help("Tokens generated")
                             .Register(*registry_)
                             .Add({});
    auto gauge = [&](const char* name, const char* help) {
        return &BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
    };
    queue_depth_ = gauge("assistd_queue_depth", "Requests waiting for admission");
    running_ = gauge("assistd_running_sequences", "Requests decoding");
    batch_size_ = gauge("assistd_batch_size", "Sequences in the last decode step");
    kv_blocks_in_use_ = gauge("assistd_kv_blocks_in_use", "KV cache blocks in use");
    kv_blocks_total_ = gauge("assistd_kv_blocks_total", "KV cache blocks in all");
    prefix_cache_sequences_ = gauge("assistd_prefix_cache_sequences", "Finished sequences kept for prefix reuse");
    prefix_cache_blocks_ = gauge("assistd_prefix_cache_blocks", "KV blocks the prefix cache's sequences span");
    auto counter = [&](const char* name, const char* help) {
        return &BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
    };
    prefix_cache_hits_.counter = counter("assistd_prefix_cache_hits_total", "Requests that reused a cached prefix");
    prefix_cache_misses_.counter =
        counter("assistd_prefix_cache_misses_total", "Requests that found no cached prefix to reuse");
    prefix_cache_reused_tokens_.counter =
        counter("assistd_prefix_cache_reused_tokens_total", "Prompt tokens taken from the prefix cache");
    prefix_cache_evictions_.counter =
        counter("assistd_prefix_cache_evictions_total", "Cached sequences evicted (budget or room for running ones)");
    prompt_tokens_prefilled_.counter =
        counter("assistd_prompt_tokens_prefilled_total", "Prompt tokens computed (not taken from the prefix cache)");
    kv_disk_hits_.counter = counter("assistd_kv_disk_hits_total", "Prompts whose cached prefix came back from the KV disk tier");
    kv_disk_tokens_.counter =
        counter("assistd_kv_disk_reused_tokens_total", "Prompt tokens read back from the KV disk tier instead of prefilled");
    kv_disk_refused_.counter = counter("assistd_kv_disk_refused_total",
                                       "KV blobs from the disk tier refused (damaged, truncated, another model's): prefilled");
    kv_disk_bytes_ = gauge("assistd_kv_disk_bytes", "Bytes of KV kept in the disk tier");
    kv_disk_entries_ = gauge("assistd_kv_disk_entries", "Conversations' KV kept in the disk tier");
    kv_standby_hits_.counter =
        counter("assistd_kv_standby_hits_total", "Prompts whose prefix came from a standby KV copy a peer sent");
    kv_standby_tokens_.counter =
        counter("assistd_kv_standby_reused_tokens_total", "Prompt tokens imported from standby KV instead of prefilled");
    kv_standby_refused_.counter = counter("assistd_kv_standby_refused_total",
                                          "Standby KV runs refused (damaged, another model's) or copies that did not load");
    kv_standby_gaps_.counter = counter("assistd_kv_standby_gaps_total",
                                       "Standby KV runs dropped because they continued a prefix this node lacks");
    kv_standby_sent_bytes_.counter = counter("assistd_kv_standby_sent_bytes_total", "Standby KV bytes sent to peers");
    kv_standby_sent_tokens_.counter =
        counter("assistd_kv_standby_sent_tokens_total", "Positions of KV sent to peers as standby copies");
    kv_standby_send_dropped_.counter = counter("assistd_kv_standby_send_dropped_total",
                                               "Standby KV runs not sent (peer link over budget, no live replica)");
    kv_standby_received_bytes_.counter =
        counter("assistd_kv_standby_received_bytes_total", "Standby KV bytes received from peers");
    kv_standby_export_seconds_ = &BuildCounter()
                                      .Name("assistd_kv_standby_export_seconds_total")
                                      .Help("Scheduler time spent exporting KV for standby copies (other sequences wait)")
                                      .Register(*registry_)
                                      .Add({});
    kv_standby_bytes_ = gauge("assistd_kv_standby_bytes", "Bytes of sessions' standby KV held (RAM, or disk with --kv-disk-dir)");
    kv_standby_sessions_ = gauge("assistd_kv_standby_sessions", "Sessions whose standby KV this node holds");
    for (auto p : kPrecisions) {
        precision_->Add({{"precision", engine::precision_name(p)}});
        precision_switches_->Add({{"to", engine::precision_name(p)}});  // zeros are exported too
        steps_by_precision_->Add({{"precision", engine::precision_name(p)}});
    }
}

ServeMetrics::~ServeMetrics() = default;

void ServeMetrics::count_request(std::string_view route, int status) {
    requests_->Add({{"route", std::string(route)}, {"status", std::to_string(status)}}).Increment();
}

void ServeMetrics::register_tenants(const std::vector<std::string>& tenants) {
    for (const auto& t : tenants) {
        rate_limited_->Add({{"tenant", tenant_label(t)}, {"limit", "requests"}});
        rate_limited_->Add({{"tenant", tenant_label(t)}, {"limit", "tokens"}});
    }
}

void ServeMetrics::count_tenant_request(std::string_view tenant, int status) {
    tenant_requests_->Add({{"tenant", tenant_label(tenant)}, {"status", std::to_string(status)}}).Increment();
}

void ServeMetrics::count_rate_limited(std::string_view tenant, std::string_view limit) {
    rate_limited_->Add({{"tenant", tenant_label(tenant)}, {"limit", std::string(limit)}}).Increment();
}

void ServeMetrics::count_tenant_precision(std::string_view tenant, std::string_view precision) {
    tenant_precision_->Add({{"tenant", tenant_label(tenant)}, {"precision", std::string(precision)}}).Increment();
}

void ServeMetrics::on_step(const StepReport& r) {
    steps_by_precision_->Add({{"precision", engine::precision_name(r.precision)}}).Increment();
    step_seconds_->Observe(r.seconds);
    for (double s : r.time_to_first_token_s) ttft_->Observe(s);
    for (double s : r.standby_time_to_first_token_s) recovery_ttft_standby_->Observe(s);
    for (double s : r.disk_time_to_first_token_s) recovery_ttft_disk_->Observe(s);
    for (double s : r.inter_token_s) inter_token_->Observe(s);
    tokens_generated_->Increment(static_cast<double>(r.tokens_generated));
}

void ServeMetrics::on_finish(const FinishReport& r) {
    if (r.reason == FinishReason::kStop || r.reason == FinishReason::kLength) inference_latency_->Observe(r.latency_s);
}

void ServeMetrics::on_precision_switch(engine::Precision from, engine::Precision to) {
    precision_switches_->Add({{"to", engine::precision_name(to)}}).Increment();
    // Rare (hysteresis keeps it so): every switch gets a log line.
    std::fprintf(stderr, "assistd serve: precision %s -> %s (policy)\n", engine::precision_name(from),
                 engine::precision_name(to));
}

void ServeMetrics::TotalCounter::advance(uint64_t total) {
    if (total > seen) counter->Increment(static_cast<double>(total - seen));
    seen = std::max(seen, total);
}

void ServeMetrics::set_cluster_source(std::function<ClusterFigures()> source) {
    using namespace prometheus;
    cluster_source_ = std::move(source);
    auto gauge = [&](const char* name, const char* help) {
        return &BuildGauge().Name(name).Help(help).Register(*registry_).Add({});
    };
    auto counter = [&](const char* name, const char* help) {
        return &BuildCounter().Name(name).Help(help).Register(*registry_).Add({});
    };
    peers_up_ = gauge("assistd_cluster_peers_up", "Peers heard from within the suspect timeout");
    peers_suspect_ = gauge("assistd_cluster_peers_suspect", "Peers not heard from lately (their sessions go to the next replica)");
    peers_departed_ = gauge("assistd_cluster_peers_departed",
                            "Peers that announced they left (drained); out of placement at once");
    sessions_local_ = gauge("assistd_cluster_sessions_local", "Live sessions stored on this node");
    sessions_replicated_ = gauge("assistd_cluster_sessions_replicated",
                                 "Live sessions stored here whose replica set includes this node");
    unacknowledged_sessions_ = gauge("assistd_replication_unacknowledged_sessions",
                                     "Sessions whose latest local changes some live replica has not acknowledged");
    peer_links_ = gauge("assistd_peer_links", "Outgoing peer streams open (one per peer address, capped)");
    replication_lag_seconds_ = &BuildHistogram()
                                    .Name("assistd_replication_lag_seconds")
                                    .Help("Time from a batch of changes leaving for a replica to its acknowledgement")
                                    .Register(*registry_)
                                    .Add({}, kLatencyBuckets);
    replication_lag_operations_ = &BuildHistogram()
                                       .Name("assistd_replication_lag_operations")
                                       .Help("CRDT operations a replica was behind, per acknowledged batch")
                                       .Register(*registry_)
                                       .Add({}, Histogram::BucketBoundaries{1, 2, 5, 10, 20, 50, 100, 1000, 10000});
    auto& repairs = BuildCounter()
                        .Name("assistd_anti_entropy_repairs_total")
                        .Help("Differences anti-entropy found and repaired, by direction (pushed to a peer, pulled here)")
                        .Register(*registry_);
    repairs_pushed_.counter = &repairs.Add({{"direction", "pushed"}});
    repairs_pulled_.counter = &repairs.Add({{"direction", "pulled"}});
    fetches_.counter = counter("assistd_fetch_on_miss_total", "Sessions fetched from a replica before serving them");
    refreshes_.counter = counter("assistd_read_refreshes_total",
                                 "Reads that heard from other replicas first (quorum reads, copies outside the replica set)");
    handoffs_.counter = counter("assistd_handoffs_confirmed_total", "Sessions a replica confirmed holding after a hand-off");
    deltas_applied_.counter = counter("assistd_replication_deltas_applied_total",
                                      "Session deltas received from peers and applied (duplicates included)");
    batches_resent_.counter = counter("assistd_replication_batches_resent_total", "Batches not acknowledged in time, sent again");
    write_ack_timeouts_.counter = counter("assistd_replication_ack_timeouts_total",
                                          "Changes whose replica acknowledgements did not arrive in time (503)");
    peer_links_refused_.counter = counter("assistd_peer_links_refused_total",
                                          "Frames dropped because the cap on outgoing peer streams was reached");
    peer_frames_refused_.counter =
        counter("assistd_peer_frames_refused_total",
                "Peer frames refused: the sender's certificate names another node, or its address is not the connection's host");
    degraded_writes_.counter =
        counter("assistd_replication_degraded_writes_total",
                "Changes acknowledged without waiting for replicas that are suspect (a partition; --degraded-writes)");
}

std::string ServeMetrics::render(const SchedulerStats& s) {
    if (cluster_source_) {
        const ClusterFigures c = cluster_source_();
        peers_up_->Set(static_cast<double>(c.peers_up));
        peers_suspect_->Set(static_cast<double>(c.peers_suspect));
        peers_departed_->Set(static_cast<double>(c.peers_departed));
        sessions_local_->Set(static_cast<double>(c.sessions_held));
        sessions_replicated_->Set(static_cast<double>(c.sessions_replicated));
        unacknowledged_sessions_->Set(static_cast<double>(c.unacknowledged_sessions));
        peer_links_->Set(static_cast<double>(c.peer_links));
        for (const auto& [seconds, operations] : c.lag) {
            replication_lag_seconds_->Observe(seconds);
            replication_lag_operations_->Observe(static_cast<double>(operations));
        }
        std::lock_guard lk(totals_mu_);
        fetches_.advance(c.fetches);
        refreshes_.advance(c.refreshes);
        repairs_pushed_.advance(c.repairs_pushed);
        repairs_pulled_.advance(c.repairs_pulled);
        handoffs_.advance(c.handoffs_confirmed);
        deltas_applied_.advance(c.deltas_applied);
        batches_resent_.advance(c.batches_resent);
        write_ack_timeouts_.advance(c.write_ack_timeouts);
        degraded_writes_.advance(c.degraded_writes);
        peer_links_refused_.advance(c.peer_links_refused);
        peer_frames_refused_.advance(c.peer_frames_refused);
    }
    prefix_cache_sequences_->Set(static_cast<double>(s.prefix_cache_sequences));
    prefix_cache_blocks_->Set(static_cast<double>(s.prefix_cache_blocks));
    {
        std::lock_guard lk(totals_mu_);
        prefix_cache_hits_.advance(s.prefix_cache_hits);
        prefix_cache_misses_.advance(s.prefix_cache_misses);
        prefix_cache_reused_tokens_.advance(s.prefix_cache_reused_tokens);
        prefix_cache_evictions_.advance(s.prefix_cache_evictions);
        prompt_tokens_prefilled_.advance(s.prompt_tokens_prefilled);
        kv_disk_hits_.advance(s.kv_disk_hits);
        kv_disk_tokens_.advance(s.kv_disk_tokens);
        kv_disk_refused_.advance(s.kv_disk_refused);
        kv_standby_hits_.advance(s.kv_standby_hits);
        kv_standby_tokens_.advance(s.kv_standby_tokens);
        kv_standby_refused_.advance(s.kv_standby_refused);
        kv_standby_gaps_.advance(s.kv_standby_gaps);
        kv_standby_sent_bytes_.advance(s.kv_standby_sent_bytes);
        kv_standby_sent_tokens_.advance(s.kv_standby_sent_tokens);
        kv_standby_send_dropped_.advance(s.kv_standby_send_dropped);
        kv_standby_received_bytes_.advance(s.kv_standby_received_bytes);
        if (s.kv_standby_export_seconds > kv_standby_export_seconds_seen_) {
            kv_standby_export_seconds_->Increment(s.kv_standby_export_seconds - kv_standby_export_seconds_seen_);
            kv_standby_export_seconds_seen_ = s.kv_standby_export_seconds;
        }
    }
    kv_standby_bytes_->Set(static_cast<double>(s.kv_standby_bytes));
    kv_standby_sessions_->Set(static_cast<double>(s.kv_standby_sessions));
    kv_disk_bytes_->Set(static_cast<double>(s.kv_disk_bytes));
    kv_disk_entries_->Set(static_cast<double>(s.kv_disk_entries));
    queue_depth_->Set(static_cast<double>(s.queue_depth));
    running_->Set(static_cast<double>(s.running));
    batch_size_->Set(static_cast<double>(s.last_batch_sequences));
    kv_blocks_in_use_->Set(static_cast<double>(s.kv_blocks_in_use));
    kv_blocks_total_->Set(static_cast<double>(s.kv_blocks_total));
    for (auto p : kPrecisions) precision_->Add({{"precision", engine::precision_name(p)}}).Set(p == s.precision ? 1 : 0);
    return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace assistd::serve
