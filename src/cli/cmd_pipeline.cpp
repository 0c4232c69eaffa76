// `assistd pipeline run --config FILE [--state-dir DIR]`: change data capture
// from the file's sources into the knowledge graph, until SIGINT/SIGTERM.
// `assistd graph query --state-dir DIR --node LABEL:KEY [--hops N]`: a
// node's neighbourhood, as `subject -[TYPE]-> object` lines.
// `assistd graph context --state-dir DIR --text "..." [--hops N] [--max-tokens N]`:
// the context block a chat message would get.
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <thread>

#include "cdc/pipeline.h"
#include "cli/commands.h"
#include "knowledge/graph_store.h"
#include "knowledge/retrieval.h"

namespace assistd::cli {
namespace {

struct PipelineOptions {
    std::string config;
    std::string state_dir;
    bool quiet = false;
};

int run_pipeline(const PipelineOptions& o) {
    auto config = cdc::load_pipeline_config(o.config);
    if (!config.ok()) {
        std::fprintf(stderr, "assistd pipeline: %s\n", config.error().message.c_str());
        return 2;
    }
    const std::string dir = o.state_dir.empty() ? config->state_dir : o.state_dir;
    if (dir.empty()) {
        std::fprintf(stderr, "assistd pipeline: give --state-dir or pipeline.state-dir: where the graph is kept\n");
        return 2;
    }
    auto graph = knowledge::GraphStore::open(dir);
    if (!graph.ok()) {
        std::fprintf(stderr, "assistd pipeline: %s\n", graph.error().message.c_str());
        return 1;
    }
    const sigset_t signals = block_stop_signals();
    std::atomic<bool> stop{false};
    std::thread waiter([&] {
        int sig = 0;
        sigwait(&signals, &sig);
        stop.store(true);
    });
    int rc = 0;
    {
        auto pipeline = cdc::Pipeline::start(*config, **graph);
        if (!pipeline.ok()) {
            std::fprintf(stderr, "assistd pipeline: %s\n", pipeline.error().message.c_str());
            rc = 1;
        } else {
            std::fprintf(stderr, "assistd pipeline: running '%s' (%zu source(s)) into %s\n", config->name.c_str(),
                         config->sources.size(), dir.c_str());
            auto last = std::chrono::steady_clock::now();
            const auto st = (*pipeline)->run(stop, [&](const cdc::PipelineProgress& p) {
                const auto now = std::chrono::steady_clock::now();
                if (o.quiet || now - last < std::chrono::seconds(1)) return;
                last = now;
                std::fprintf(stderr, "pipeline: %llu transactions, %llu rows applied; %s at %s; lag %.1f ms\n",
                             static_cast<unsigned long long>(p.transactions), static_cast<unsigned long long>(p.rows),
                             p.source.c_str(), p.position.c_str(), p.last_lag_ms);
            });
            if (!st.ok()) {
                std::fprintf(stderr, "assistd pipeline: %s\n", st.error().message.c_str());
                rc = 1;
            }
        }
    }
    if (!stop.load()) pthread_kill(waiter.native_handle(), SIGTERM);
    waiter.join();
    return rc;
}

std::string describe(const knowledge::NodeRef& n) {
    return n.label + ":" + n.key;
}

std::string properties_text(const knowledge::Properties& p) {
    std::string out;
    for (const auto& [k, v] : p) out += (out.empty() ? " {" : ", ") + k + ": " + v;
    return out.empty() ? out : out + "}";
}

int query_graph(const std::string& dir, const std::string& node, int hops) {
    const size_t colon = node.find(':');
    if (colon == std::string::npos || colon == 0) {
        std::fprintf(stderr, "assistd graph query: --node must be LABEL:KEY (e.g. accounts:42)\n");
        return 2;
    }
    auto graph = knowledge::GraphStore::open(dir);
    if (!graph.ok()) {
        std::fprintf(stderr, "assistd graph query: %s\n", graph.error().message.c_str());
        return 1;
    }
    const auto reader = (*graph)->read();
    const knowledge::NodeRef start{node.substr(0, colon), node.substr(colon + 1)};
    const auto found = reader.node(start);
    if (!found) {
        std::fprintf(stderr, "assistd graph query: no node %s\n", node.c_str());
        return 1;
    }
    std::printf("%s%s\n", describe(start).c_str(), properties_text(found->properties).c_str());
    std::set<knowledge::NodeRef> seen{start};
    std::set<std::string> printed;  // an edge reached from both ends is printed once
    auto print = [&](const knowledge::Edge& e) {
        std::string line = describe(e.from) + " -[" + e.type + "]-> " + describe(e.to);
        if (printed.insert(line).second) std::printf("%s\n", line.c_str());
    };
    std::vector<knowledge::NodeRef> frontier{start};
    for (int h = 0; h < hops && !frontier.empty(); ++h) {
        std::vector<knowledge::NodeRef> next;
        for (const auto& n : frontier) {
            for (const auto& e : reader.out_edges(n)) {
                print(e);
                if (seen.insert(e.to).second) next.push_back(e.to);
            }
            for (const auto& e : reader.in_edges(n)) {
                print(e);
                if (seen.insert(e.from).second) next.push_back(e.from);
            }
        }
        frontier = std::move(next);
    }
    return 0;
}

int graph_context(const std::string& dir, const std::string& text, int hops, size_t max_tokens) {
    auto graph = knowledge::GraphStore::open(dir);
    if (!graph.ok()) {
        std::fprintf(stderr, "assistd graph context: %s\n", graph.error().message.c_str());
        return 1;
    }
    knowledge::RetrievalOptions o;
    o.hops = hops;
    o.max_tokens = max_tokens;
    const auto c = knowledge::retrieve((*graph)->read(), text, o);
    if (c.entities.empty()) {
        std::fprintf(stderr, "assistd graph context: the text names no entity the graph knows\n");
        return 1;
    }
    std::printf("%s", c.text().c_str());
    std::fprintf(stderr, "%zu entities, %zu facts, ~%zu tokens%s\n", c.entities.size(), c.facts.size(), c.tokens,
                 c.truncated ? " (cut at the budget)" : "");
    return 0;
}

}  // namespace

void register_pipeline(CLI::App& app, int& exit_code) {
    auto* pipeline = app.add_subcommand("pipeline", "Change data capture into the knowledge graph");
    pipeline->require_subcommand(1);
    auto o = std::make_shared<PipelineOptions>();
    auto* run = pipeline->add_subcommand("run", "Run a pipeline file until SIGINT/SIGTERM");
    run->add_option("--config", o->config, "The pipeline YAML (source, graph, pipeline sections)")->required();
    run->add_option("--state-dir", o->state_dir, "Where the graph lives (default: the file's pipeline.state-dir)");
    run->add_flag("--quiet", o->quiet, "No progress lines");
    run->callback([o, &exit_code] { exit_code = run_pipeline(*o); });

    auto* graph = app.add_subcommand("graph", "Read the knowledge graph");
    graph->require_subcommand(1);
    auto q = std::make_shared<std::tuple<std::string, std::string, int>>("", "", 1);
    auto* query = graph->add_subcommand("query", "Print a node and its neighbourhood");
    query->add_option("--state-dir", std::get<0>(*q), "The pipeline's state directory")->required();
    query->add_option("--node", std::get<1>(*q), "LABEL:KEY")->required();
    query->add_option("--hops", std::get<2>(*q), "How far to expand")->check(CLI::Range(0, 5))->capture_default_str();
    query->callback([q, &exit_code] { exit_code = query_graph(std::get<0>(*q), std::get<1>(*q), std::get<2>(*q)); });

    struct ContextOptions {
        std::string dir, text;
        int hops = 1;
        size_t max_tokens = 512;
    };
    auto co = std::make_shared<ContextOptions>();
    auto* context = graph->add_subcommand("context", "Print the context block a chat message would get");
    context->add_option("--state-dir", co->dir, "The pipeline's state directory")->required();
    context->add_option("--text", co->text, "The message")->required();
    context->add_option("--hops", co->hops, "How far to expand")->check(CLI::Range(0, 5))->capture_default_str();
    context->add_option("--max-tokens", co->max_tokens, "The block's budget")->check(CLI::Range(16, 65536))->capture_default_str();
    context->callback([co, &exit_code] { exit_code = graph_context(co->dir, co->text, co->hops, co->max_tokens); });
}

}  // namespace assistd::cli
