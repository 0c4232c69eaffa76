#pragma once
// `assistd serve --knowledge-pipeline FILE`: the pipeline runs inside the
// server on its own thread, into the graph the chat route reads
// (serve/knowledge_context.h). The graph lives in the file's
// pipeline.state-dir, else in <--state-dir>/knowledge.
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "cdc/pipeline.h"
#include "common/result.h"
#include "knowledge/graph_store.h"

namespace assistd::cli {

class ServeKnowledge {
  public:
    static Result<std::unique_ptr<ServeKnowledge>> start(const std::string& pipeline_file, const std::string& state_dir);
    ~ServeKnowledge();  // stops the pipeline (within ~100 ms) and closes the graph
    knowledge::GraphStore& graph() { return *graph_; }

  private:
    ServeKnowledge() = default;
    std::unique_ptr<knowledge::GraphStore> graph_;
    std::unique_ptr<cdc::Pipeline> pipeline_;
    std::atomic<bool> stop_{false};
    std::thread runner_;
};

}  // namespace assistd::cli
