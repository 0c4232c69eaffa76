// assistd-cdc-bench: how fresh the knowledge graph is (issue 15). Against a
// PostgreSQL server (bench/cdc_freshness.sh starts one), it runs the
// pipeline in this process on one thread and writes transactions of ten row
// events (nine inserts and an update of a heartbeat row carrying the
// writer's clock in microseconds, taken just before the transaction is sent)
// at a fixed rate. Each time the graph applies a write, the heartbeat node is
// read: a commit is visible when a read first shows its heartbeat or a
// later one; its latency is that read's time minus the commit's heartbeat. Side by side, in the same run and from the same commits, the
// traditional approach: a poller that re-reads the table every --poll-ms.
// Then the most row events per second the pipeline applies, fed with
// transactions of 1,000 rows. Prints figures; never fails on time.
#include <libpq-fe.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cdc/pipeline.h"
#include "knowledge/graph_store.h"

namespace {

using namespace assistd;
using Clock = std::chrono::steady_clock;

int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Conn {
    PGconn* c = nullptr;
    explicit Conn(const std::string& info) : c(PQconnectdb(info.c_str())) {}
    ~Conn() { PQfinish(c); }
    bool ok() const { return PQstatus(c) == CONNECTION_OK; }
    bool exec(const std::string& sql) {
        PGresult* r = PQexec(c, sql.c_str());
        const auto st = PQresultStatus(r);
        const bool good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        if (!good) std::fprintf(stderr, "cdc-bench: %s: %s", sql.substr(0, 80).c_str(), PQresultErrorMessage(r));
        PQclear(r);
        return good;
    }
    int64_t value(const std::string& sql) {
        PGresult* r = PQexec(c, sql.c_str());
        int64_t v = -1;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) v = std::stoll(PQgetvalue(r, 0, 0));
        PQclear(r);
        return v;
    }
};

// When a reader saw the heartbeat, and the value it saw (microseconds).
struct Observations {
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> seen;  // (when, heartbeat)
    void add(int64_t when, int64_t heartbeat) {
        std::lock_guard lk(mu);
        seen.emplace_back(when, heartbeat);
    }
    std::vector<std::pair<int64_t, int64_t>> take() {
        std::lock_guard lk(mu);
        return std::exchange(seen, {});
    }
};

// For each commit (its heartbeat time), how long until a reader first saw it
// or a later one, in ms; commits never seen are left out (counted apart).
std::vector<double> latencies(const std::vector<int64_t>& commits, const std::vector<std::pair<int64_t, int64_t>>& seen,
                              size_t& unseen) {
    std::vector<double> out;
    unseen = 0;
    size_t j = 0;
    for (int64_t c : commits) {
        while (j < seen.size() && seen[j].second < c) ++j;
        if (j == seen.size()) {
            ++unseen;
            continue;
        }
        out.push_back(static_cast<double>(seen[j].first - c) / 1000.0);
    }
    return out;
}

double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"assistd-cdc-bench: commit-to-visible latency of the knowledge graph against PostgreSQL"};
    int port = 5432;
    std::string host = "127.0.0.1", user = "postgres", database = "postgres";
    double seconds = 10;
    std::vector<int> rates{1000, 10000};
    int poll_ms = 1000;
    double max_seconds = 10;
    app.add_option("--host", host)->capture_default_str();
    app.add_option("--port", port)->capture_default_str();
    app.add_option("--user", user)->capture_default_str();
    app.add_option("--database", database)->capture_default_str();
    app.add_option("--seconds", seconds, "Per rate")->capture_default_str();
    app.add_option("--rates", rates, "Row events per second")->delimiter(',');
    app.add_option("--poll-ms", poll_ms, "The polling baseline's interval")->capture_default_str();
    app.add_option("--max-seconds", max_seconds, "The throughput run")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

    const std::string info = "host=" + host + " port=" + std::to_string(port) + " user=" + user + " dbname=" + database;
    Conn setup(info);
    if (!setup.ok()) {
        std::fprintf(stderr, "cdc-bench: cannot connect: %s", PQerrorMessage(setup.c));
        return 2;
    }
    setup.exec("DROP TABLE IF EXISTS heartbeat, events; SELECT pg_drop_replication_slot(slot_name) FROM "
               "pg_replication_slots WHERE slot_name = 'assistd_bench'; DROP PUBLICATION IF EXISTS assistd_bench");
    if (!setup.exec("CREATE TABLE heartbeat (id int PRIMARY KEY, t_us bigint NOT NULL); INSERT INTO heartbeat VALUES (1, 0);"
                    "CREATE TABLE events (id bigint PRIMARY KEY, account int NOT NULL, amount numeric(12,2), note text)"))
        return 1;

    const auto dir = std::filesystem::temp_directory_path() / ("assistd-cdc-bench-" + std::to_string(::getpid()));
    auto graph = knowledge::GraphStore::open(dir.string());
    if (!graph.ok()) {
        std::fprintf(stderr, "cdc-bench: %s\n", graph.error().message.c_str());
        return 1;
    }
    cdc::PipelineConfig config;
    cdc::SourceConfig source;
    source.host = host;
    source.port = port;
    source.database = database;
    source.username = user;
    source.tables = {"heartbeat", "events"};
    source.slot_name = "assistd_bench";
    source.publication = "assistd_bench";
    source.name = "pg";
    config.sources = {source};
    auto pipeline = cdc::Pipeline::start(config, **graph);
    if (!pipeline.ok()) {
        std::fprintf(stderr, "cdc-bench: %s\n", pipeline.error().message.c_str());
        return 1;
    }
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> applied_rows{0};
    std::thread runner([&] {
        const auto st = (*pipeline)->run(stop, [&](const cdc::PipelineProgress& p) { applied_rows.store(p.rows); });
        if (!st.ok()) std::fprintf(stderr, "cdc-bench: the pipeline stopped: %s\n", st.error().message.c_str());
    });

    // The observer: after each applied write, the heartbeat node's time.
    Observations pipeline_seen, polling_seen;
    std::atomic<bool> observing{true};
    std::thread observer([&] {
        int64_t last = 0;
        while (observing.load()) {
            int64_t seen = last;
            (*graph)->wait_for(
                [&](const std::map<std::string, std::string>&) {
                    const auto n = (*graph)->read().node({"heartbeat", "1"});
                    if (n) seen = std::stoll(n->properties.at("t_us"));
                    return seen != last;
                },
                100);
            if (seen != last && seen > 0) pipeline_seen.add(now_us(), seen);
            last = seen;
        }
    });
    // The polling baseline: the table re-read every poll_ms.
    std::atomic<bool> polling{true};
    std::thread poller([&] {
        Conn c(info);
        int64_t last = 0;
        while (polling.load()) {
            const auto next = Clock::now() + std::chrono::milliseconds(poll_ms);
            // A snapshot poll reads the tables; the heartbeat says how recent the snapshot is.
            const int64_t t = c.value("SELECT t_us FROM heartbeat WHERE id = 1");
            c.value("SELECT count(*) FROM events");
            if (t > 0 && t != last) polling_seen.add(now_us(), t);
            last = t;
            std::this_thread::sleep_until(next);
        }
    });

    std::printf("cdc-bench: PostgreSQL at %s:%d; the pipeline on one thread in this process; transactions of 10 row events "
                "(9 inserts + the heartbeat); polling baseline every %d ms\n",
                host.c_str(), port, poll_ms);
    Conn writer(info);
    int64_t next_id = 1;
    for (int rate : rates) {
        const int txn_per_s = std::max(1, rate / 10);
        const auto gap = std::chrono::nanoseconds(1'000'000'000LL / txn_per_s);
        pipeline_seen.take();
        polling_seen.take();
        std::vector<int64_t> commits;
        const auto start = Clock::now();
        auto slot = start;
        int64_t sent = 0;
        while (Clock::now() - start < std::chrono::duration<double>(seconds)) {
            std::string sql = "BEGIN; INSERT INTO events VALUES ";
            for (int i = 0; i < 9; ++i) {
                if (i) sql += ", ";
                const int64_t id = next_id++;
                sql += "(";
                sql += std::to_string(id);
                sql += ", ";
                sql += std::to_string(id % 97);
                sql += ", 12.5, 'event')";
            }
            const int64_t t = now_us();
            sql += "; UPDATE heartbeat SET t_us = " + std::to_string(t) + " WHERE id = 1; COMMIT";
            if (writer.exec(sql)) commits.push_back(t);
            sent += 10;
            slot += gap;
            std::this_thread::sleep_until(slot);  // behind schedule: no sleep, catch up
        }
        const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms + 200));  // the last ones arrive
        size_t p_unseen = 0, q_unseen = 0;
        const auto p = latencies(commits, pipeline_seen.take(), p_unseen);
        const auto q = latencies(commits, polling_seen.take(), q_unseen);
        std::printf("rate %6d row-events/s (sent %.0f/s, %zu commits): commit -> visible p50 %6.2f ms  p99 %6.2f ms"
                    "%s | polling every %d ms: p50 %6.1f ms  p99 %6.1f ms\n",
                    rate, static_cast<double>(sent) / elapsed, commits.size(), percentile(p, 0.5), percentile(p, 0.99),
                    p_unseen ? (" (" + std::to_string(p_unseen) + " not seen)").c_str() : "", poll_ms, percentile(q, 0.5),
                    percentile(q, 0.99));
        std::fflush(stdout);
    }
    polling.store(false);
    poller.join();

    // Throughput: transactions of 1,000 rows as fast as one writer sends them.
    {
        const uint64_t before = applied_rows.load();
        const auto start = Clock::now();
        int64_t sent = 0;
        while (Clock::now() - start < std::chrono::duration<double>(max_seconds)) {
            writer.exec("INSERT INTO events SELECT g, g % 97, 12.5, 'bulk' FROM generate_series(" +
                        std::to_string(next_id) + ", " + std::to_string(next_id + 999) + ") g");
            next_id += 1000;
            sent += 1000;
        }
        // Wait for the pipeline to drain what was sent (bounded).
        const auto drain_until = Clock::now() + std::chrono::seconds(120);
        while (applied_rows.load() - before < static_cast<uint64_t>(sent) && Clock::now() < drain_until)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        std::printf("max: %.0f row-events/s applied (%lld rows in transactions of 1,000, %.1f s from the first send to "
                    "the last applied; the pipeline on one thread)\n",
                    static_cast<double>(applied_rows.load() - before) / elapsed, static_cast<long long>(sent), elapsed);
    }
    observing.store(false);
    observer.join();
    stop.store(true);
    runner.join();
    pipeline->reset();
    graph->reset();
    std::filesystem::remove_all(dir);
    setup.exec("SELECT pg_drop_replication_slot('assistd_bench')");
    return 0;
}
