#include "cdc/pipeline.h"

#include <chrono>
#include <optional>

#include "cdc/graph_mapping.h"
#include "cdc/postgres_source.h"

namespace assistd::cdc {
namespace {

// A group of transactions applied in one write: at most this many, or this
// many graph changes (the first transaction alone may be bigger).
constexpr size_t kMaxGroupTransactions = 256;
constexpr size_t kMaxGroupChanges = 65536;

}  // namespace

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
            auto first = r.source->next(wait_ms);
            if (!first.ok()) return first.error();
            if (!*first) continue;
            // The transactions already here join the first in one durable write
            // (each still whole: a reader sees several at once, never half of one),
            // so a busy source costs one sync per group, not one per transaction.
            knowledge::GraphBatch group;
            size_t transactions = 0, rows = 0;
            int64_t last_commit_us = 0;
            std::optional<SourceTransaction> txn = std::move(*first);
            while (txn) {
                auto batch = r.mapping->map(*txn, r.config.name);
                if (!batch.ok()) return batch.error();
                if (group.changes.empty()) {
                    group = std::move(*batch);
                } else {
                    for (auto& c : batch->changes) group.changes.push_back(std::move(c));
                    group.position = std::move(batch->position);
                }
                ++transactions;
                rows += txn->rows.size();
                if (txn->commit_time_us > 0) last_commit_us = txn->commit_time_us;
                txn.reset();
                if (transactions >= kMaxGroupTransactions || group.changes.size() >= kMaxGroupChanges) break;
                auto more = r.source->next(0);
                if (!more.ok()) return more.error();
                txn = std::move(*more);
            }
            if (auto st = impl_->graph->apply(group); !st.ok()) return st;
            r.source->confirm(group.position);
            p.transactions += transactions;
            p.rows += rows;
            p.source = r.config.name;
            p.position = group.position;
            if (last_commit_us > 0) {
                const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count();
                p.last_lag_ms = static_cast<double>(now_us - last_commit_us) / 1000.0;
            }
            if (progress) progress(p);
        }
    }
    return {};
}

}  // namespace assistd::cdc
