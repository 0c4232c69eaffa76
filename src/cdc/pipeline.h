#pragma once
// A running pipeline: its sources' transactions, mapped onto the graph and
// applied with their source position in one durable write (the transactions
// that are already waiting join one write, each whole), then confirmed to
// the source. Started again after a crash it resumes from the positions the
// graph holds: nothing lost, nothing applied twice.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cdc/pipeline_config.h"
#include "common/result.h"
#include "knowledge/graph_store.h"

namespace assistd::cdc {

struct PipelineProgress {
    std::string source;
    std::string position;
    uint64_t transactions = 0;  // applied by this run, all sources
    uint64_t rows = 0;
    double last_lag_ms = 0;     // commit (source clock) to applied (ours)
};

class Pipeline {
  public:
    static Result<std::unique_ptr<Pipeline>> start(const PipelineConfig& config, knowledge::GraphStore& graph);
    ~Pipeline();
    // Until `stop` is set (checked at least every 100 ms) or a source fails.
    // `progress` is called after each applied transaction.
    Status run(const std::atomic<bool>& stop, const std::function<void(const PipelineProgress&)>& progress = {});

    struct Impl;

  private:
    explicit Pipeline(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace assistd::cdc
