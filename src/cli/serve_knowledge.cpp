#include "cli/serve_knowledge.h"

#include <spdlog/spdlog.h>

#include <filesystem>

namespace assistd::cli {

Result<std::unique_ptr<ServeKnowledge>> ServeKnowledge::start(const std::string& pipeline_file,
                                                              const std::string& state_dir) {
    auto config = cdc::load_pipeline_config(pipeline_file);
    if (!config.ok()) return config.error();
    std::string dir = config->state_dir;
    if (dir.empty() && !state_dir.empty()) dir = (std::filesystem::path(state_dir) / "knowledge").string();
    if (dir.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "--knowledge-pipeline: say where the graph lives (pipeline.state-dir in " + pipeline_file +
                              ", or --state-dir)");
    std::unique_ptr<ServeKnowledge> k(new ServeKnowledge());
    auto graph = knowledge::GraphStore::open(dir);
    if (!graph.ok()) return graph.error();
    k->graph_ = std::move(*graph);
    auto pipeline = cdc::Pipeline::start(*config, *k->graph_);
    if (!pipeline.ok()) return pipeline.error();
    k->pipeline_ = std::move(*pipeline);
    k->runner_ = std::thread([p = k.get(), name = config->name] {
        const auto st = p->pipeline_->run(p->stop_);
        if (!st.ok())
            spdlog::error("knowledge: pipeline '{}' stopped: {}; the graph keeps what it applied (answers may be stale)",
                          name, st.error().message);
    });
    spdlog::info("knowledge: pipeline '{}' runs into {}", config->name, dir);
    return k;
}

ServeKnowledge::~ServeKnowledge() {
    stop_.store(true);
    if (runner_.joinable()) runner_.join();
    pipeline_.reset();
    graph_.reset();
}

}  // namespace assistd::cli
