#include "cdc/pipeline.h"

#include <chrono>

#include "cdc/graph_mapping.h"
#include "cdc/postgres_source.h"

namespace assistd::cdc {

struct Pipeline::Impl {
    knowledge::GraphStore* graph = nullptr;
    struct Running {
        SourceConfig config;
        std::unique_ptr<PostgresSource> source;
        std::unique_ptr<GraphMapping> mapping;
    };
    std::vector<Running> sources;
};

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() = default;

Result<std::unique_ptr<Pipeline>> Pipeline::start(const PipelineConfig& config, knowledge::GraphStore& graph) {
    auto impl = std::make_unique<Impl>();
    impl->graph = &graph;
    for (const auto& sc : config.sources) {
        Impl::Running r;
        r.config = sc;
        auto source = PostgresSource::open(sc, graph.position(sc.name));
        if (!source.ok()) return source.error();
        r.source = std::move(*source);
        // The configured tables, and each foreign key as an edge unless one names the same columns.
        std::vector<TableMapping> tables = config.tables;
        if (config.foreign_keys) {
            for (const auto& [table, fk] : r.source->foreign_keys()) {
                const std::string bare = table.substr(table.find('.') + 1);
                TableMapping* owner = nullptr;
                for (auto& t : tables)
                    if (t.table == table || t.table == bare) owner = &t;
                if (!owner) {
                    if (!config.map_all) continue;
                    tables.push_back(TableMapping{table, bare, {}, {}, {}});
                    owner = &tables.back();
                }
                bool named = false;
                for (const auto& e : owner->edges) named |= e.columns == fk.columns;
                if (!named) owner->edges.push_back(fk);
            }
        }
        r.mapping = std::make_unique<GraphMapping>(std::move(tables), config.map_all);
        impl->sources.push_back(std::move(r));
    }
    return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

Status Pipeline::run(const std::atomic<bool>& stop, const std::function<void(const PipelineProgress&)>& progress) {
    PipelineProgress p;
    const int wait_ms = impl_->sources.size() > 1 ? 20 : 100;
    while (!stop.load()) {
        for (auto& r : impl_->sources) {
            auto txn = r.source->next(wait_ms);
            if (!txn.ok()) return txn.error();
            if (!*txn) continue;
            auto batch = r.mapping->map(**txn, r.config.name);
            if (!batch.ok()) return batch.error();
            if (auto st = impl_->graph->apply(*batch); !st.ok()) return st;
            r.source->confirm((*txn)->position);
            ++p.transactions;
            p.rows += (*txn)->rows.size();
            p.source = r.config.name;
            p.position = (*txn)->position;
            if ((*txn)->commit_time_us > 0) {
                const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count();
                p.last_lag_ms = static_cast<double>(now_us - (*txn)->commit_time_us) / 1000.0;
            }
            if (progress) progress(p);
        }
    }
    return {};
}

}  // namespace assistd::cdc
