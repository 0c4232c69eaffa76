#pragma once
// The server's Prometheus metrics (prometheus-cpp core, text format served on
// our own /metrics). Scheduler figures come in once per decode step through
// SchedulerObserver; gauges are read from SchedulerStats at scrape time.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

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

class ServeMetrics final : public SchedulerObserver {
public:
    ServeMetrics();
    ~ServeMetrics() override;

    void count_request(std::string_view route, int status);
    void on_step(const StepReport& report) override;
    void on_finish(const FinishReport& report) override;
    void on_precision_switch(engine::Precision from, engine::Precision to) override;

    // The Prometheus text exposition, gauges refreshed from `stats`.
    std::string render(const SchedulerStats& stats);

private:
    std::shared_ptr<prometheus::Registry> registry_;
    prometheus::Family<prometheus::Counter>* requests_;
    prometheus::Family<prometheus::Counter>* precision_switches_;
    prometheus::Family<prometheus::Gauge>* precision_;
    prometheus::Histogram* inference_latency_;
    prometheus::Histogram* ttft_;
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
    std::mutex totals_mu_;
    TotalCounter prefix_cache_hits_, prefix_cache_misses_, prefix_cache_reused_tokens_, prefix_cache_evictions_,
        prompt_tokens_prefilled_;
};

}  // namespace assistd::serve
