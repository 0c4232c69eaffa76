// The PostgreSQL pipeline against a real server (PostgreSQL 15 from the
// Debian package, started on 127.0.0.1 in a temporary directory): the
// initial snapshot and the stream keep the graph equal to the tables, row by
// row — inserts, updates (a moved reference, a changed key, an added column),
// deletes, a TRUNCATE, NULLs, NUMERIC, timestamp(6), unicode, composite keys;
// a 100,000-row transaction is seen whole or not at all; `assistd pipeline
// run` SIGKILLed at random moments under a write load resumes with nothing
// lost and nothing doubled; bad setups are clear errors. Skips without the
// server binaries.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "cdc/graph_mapping.h"
#include "cdc/pgoutput.h"
#include "cdc/pipeline.h"
#include "cdc/postgres_source.h"
#include "knowledge/graph_store.h"
#include "postgres_server.h"

namespace assistd::cdc {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using test_support::PostgresServer;

const char* kSchema = R"(
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, opened timestamp(6), balance numeric(14,4));
CREATE TABLE instruments (symbol text PRIMARY KEY, name text);
CREATE TABLE trades (id bigint PRIMARY KEY, account_id int REFERENCES accounts(id), symbol text REFERENCES instruments(symbol),
                     qty numeric(12,2), at timestamp(6), note text);
CREATE TABLE positions (account_id int REFERENCES accounts(id), symbol text REFERENCES instruments(symbol),
                        qty numeric(12,2), PRIMARY KEY (account_id, symbol));
CREATE TABLE tags (id int PRIMARY KEY, label text);
INSERT INTO accounts VALUES (1, 'Ada', '2026-01-02 03:04:05.123456', 1000.5), (2, 'Bob', NULL, NULL);
INSERT INTO instruments VALUES ('AAPL', 'Apple'), ('MSFT', 'Microsoft'), ('7203.T', 'トヨタ自動車');
INSERT INTO trades VALUES (10, 1, 'AAPL', 100.25, '2026-12-07 10:00:00.000001', NULL);
INSERT INTO positions VALUES (1, 'AAPL', 100.25);
INSERT INTO tags VALUES (1, 'x'), (2, 'y');
)";

struct TableShape {
    std::string table;
    std::vector<std::string> key;
    std::vector<std::pair<std::string, std::string>> references;  // (column, table): single-column foreign keys
};
const std::vector<TableShape> kTables = {
    {"accounts", {"id"}, {}},
    {"instruments", {"symbol"}, {}},
    {"trades", {"id"}, {{"account_id", "accounts"}, {"symbol", "instruments"}}},
    {"positions", {"account_id", "symbol"}, {{"account_id", "accounts"}, {"symbol", "instruments"}}},
    {"tags", {"id"}, {}},
};

// The graph the tables should give, compared with the graph's; "" when equal.
std::string compare(PostgresServer& pg, const std::string& db, knowledge::GraphStore& graph,
                    const std::vector<TableShape>& tables = kTables) {
    const auto reader = graph.read();
    std::set<std::string> edges_expected, edges_found;
    for (const auto& t : tables) {
        const auto cols = pg.rows("SELECT column_name FROM information_schema.columns WHERE table_name = '" + t.table +
                                      "' ORDER BY ordinal_position",
                                  db);
        const auto rows = pg.rows("SELECT * FROM " + t.table, db);
        std::map<std::string, knowledge::Properties> expected;
        for (const auto& row : rows) {
            knowledge::Properties props;
            std::map<std::string, std::string> by_name;
            for (size_t i = 0; i < row.size(); ++i) {
                by_name[cols[i][0]] = row[i];
                if (row[i] != "\\N") props[cols[i][0]] = row[i];
            }
            std::vector<std::string> key;
            for (const auto& k : t.key) key.push_back(by_name[k]);
            const std::string key_text = GraphMapping::key_text(key);
            expected[key_text] = props;
            for (const auto& [col, target] : t.references)
                if (by_name[col] != "\\N") {
                    std::string e = t.table + ":" + key_text + " -[";
                    e += GraphMapping::default_edge_type({col});
                    e += "]-> " + target + ":" + GraphMapping::key_text({by_name[col]});
                    edges_expected.insert(e);
                }
        }
        std::map<std::string, knowledge::Properties> found;
        for (const auto& n : reader.nodes(t.table)) found[n.ref.key] = n.properties;
        if (found.size() != expected.size())
            return t.table + ": " + std::to_string(found.size()) + " nodes in the graph, " +
                   std::to_string(expected.size()) + " rows in the table";
        for (const auto& [key, props] : expected) {
            auto it = found.find(key);
            if (it == found.end()) return t.table + ": no node for the row with key " + key;
            if (it->second != props) {
                std::string diff;
                for (const auto& [k, v] : props) {
                    auto f = it->second.find(k);
                    if (f == it->second.end() || f->second != v)
                        diff += " " + k + "=" + v + " (graph: " + (f == it->second.end() ? "none" : f->second) + ")";
                }
                return t.table + ":" + key + " differs:" + (diff.empty() ? " extra properties" : diff);
            }
        }
    }
    auto line_of = [](const knowledge::Edge& e) {
        return e.from.label + ":" + e.from.key + " -[" + e.type + "]-> " + e.to.label + ":" + e.to.key;
    };
    std::set<knowledge::NodeRef> targets;
    for (const auto& e : reader.edges()) {
        if (!edges_found.insert(line_of(e)).second) return "edge twice: " + line_of(e);
        targets.insert(e.to);
    }
    // The in-index holds exactly the out-edges.
    std::set<std::string> indexed;
    for (const auto& t : targets)
        for (const auto& in : reader.in_edges(t)) indexed.insert(line_of(in));
    if (indexed != edges_found) return "the in-index differs from the out-edges";
    if (edges_found != edges_expected) {
        for (const auto& e : edges_expected)
            if (!edges_found.count(e)) return "missing edge " + e;
        for (const auto& e : edges_found)
            if (!edges_expected.count(e)) return "extra edge " + e;
    }
    return "";
}

// Polls until the graph equals the tables; the last difference on timeout.
std::string converge(PostgresServer& pg, const std::string& db, knowledge::GraphStore& graph,
                     std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto until = Clock::now() + limit;
    std::string diff;
    do {
        diff = compare(pg, db, graph);
        if (diff.empty()) return "";
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < until);
    return diff;
}

class PostgresPipelineTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        if (!PostgresServer::unavailable().empty()) return;
        server_ = new PostgresServer();
    }
    static void TearDownTestSuite() {
        delete server_;
        server_ = nullptr;
    }
    void SetUp() override {
        if (const std::string why = PostgresServer::unavailable(); !why.empty()) GTEST_SKIP() << why;
        ASSERT_TRUE(server_ && server_->started()) << (server_ ? server_->error() : "");
        dir_ = fs::temp_directory_path() / ("assistd-cdc-" + std::to_string(::getpid()) + "-" +
                                            std::to_string(std::random_device{}()));
        fs::create_directories(dir_);
    }
    void TearDown() override {
        stop_.store(true);
        if (runner_.joinable()) runner_.join();
        pipeline_.reset();
        graph_.reset();
        fs::remove_all(dir_);
    }
    // A fresh database with the schema; its name.
    std::string database(const std::string& name, const char* schema = kSchema) {
        EXPECT_EQ(server_->exec("CREATE DATABASE " + name), "");
        EXPECT_EQ(server_->exec(schema, name), "");
        return name;
    }
    SourceConfig source(const std::string& db) {
        SourceConfig s;
        s.host = "127.0.0.1";
        s.port = server_->port();
        s.database = db;
        s.username = "postgres";
        s.slot_name = "assistd_" + db;
        s.publication = "assistd";
        s.name = "pg/" + db;
        return s;
    }
    // Opens the graph and runs the pipeline on a thread.
    void start(const SourceConfig& s) {
        auto g = knowledge::GraphStore::open((dir_ / "graph").string());
        ASSERT_TRUE(g.ok()) << g.error().message;
        graph_ = std::move(*g);
        PipelineConfig c;
        c.sources = {s};
        auto p = Pipeline::start(c, *graph_);
        ASSERT_TRUE(p.ok()) << p.error().message;
        pipeline_ = std::move(*p);
        runner_ = std::thread([this] {
            const auto st = pipeline_->run(stop_);
            if (!st.ok()) run_error_ = st.error().message;
        });
    }

    static inline PostgresServer* server_ = nullptr;
    fs::path dir_;
    std::unique_ptr<knowledge::GraphStore> graph_;
    std::unique_ptr<Pipeline> pipeline_;
    std::thread runner_;
    std::atomic<bool> stop_{false};
    std::string run_error_;
};

TEST_F(PostgresPipelineTest, TheSnapshotAndTheStreamKeepTheGraphEqualToTheTables) {
    const std::string db = database("mirror");
    start(source(db));
    ASSERT_EQ(converge(*server_, db, *graph_), "") << "after the initial snapshot; " << run_error_;
    const auto before = graph_->position("pg/" + db);
    ASSERT_TRUE(before);

    const char* changes[] = {
        "INSERT INTO accounts VALUES (3, 'Zoë ☃', '2026-12-07 23:59:59.999999', -0.0001)",
        "INSERT INTO trades VALUES (11, 3, 'MSFT', 5, now(), 'first'), (12, 2, NULL, 1.5, NULL, NULL)",
        "UPDATE accounts SET name = 'Ada L.', balance = balance + 1 WHERE id = 1",
        "UPDATE trades SET account_id = 2, symbol = '7203.T' WHERE id = 10",  // the references move
        "UPDATE positions SET symbol = 'MSFT' WHERE account_id = 1",           // a composite key changes
        "INSERT INTO positions VALUES (3, 'AAPL', 7), (3, '7203.T', NULL)",
        "DELETE FROM trades WHERE id = 12",
        "BEGIN; INSERT INTO trades VALUES (13, 1, 'AAPL', 1, NULL, 'gone'); DELETE FROM trades WHERE id = 13; COMMIT",
        "ALTER TABLE trades ADD COLUMN venue text; INSERT INTO trades VALUES (14, 1, 'AAPL', 2, NULL, NULL, 'XNYS')",
        "UPDATE trades SET venue = 'XTKS' WHERE id = 10",
        "TRUNCATE tags",
        "INSERT INTO tags VALUES (3, 'after the truncate')",
    };
    for (const char* sql : changes) ASSERT_EQ(server_->exec(sql, db), "") << sql;
    ASSERT_EQ(converge(*server_, db, *graph_), "") << run_error_;
    const auto after = graph_->position("pg/" + db);
    ASSERT_TRUE(after);
    EXPECT_GT(*pg::parse_lsn(*after), *pg::parse_lsn(*before));
    EXPECT_TRUE(run_error_.empty()) << run_error_;
    // The slot advanced with the graph: the server keeps no WAL the graph already holds.
    auto confirmed = [&] {
        const auto r = server_->rows(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'assistd_" + db + "'", db);
        return r.size() == 1 ? pg::parse_lsn(r[0][0]).value_or(0) : 0;
    };
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (Clock::now() < until && confirmed() < *pg::parse_lsn(*after))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_GE(confirmed(), *pg::parse_lsn(*after));
}

TEST_F(PostgresPipelineTest, AHundredThousandRowTransactionIsSeenWholeOrNotAtAll) {
    const std::string db = database("bulk");
    start(source(db));
    ASSERT_EQ(converge(*server_, db, *graph_), "") << run_error_;
    std::atomic<bool> done{false};
    std::set<size_t> seen;
    std::thread reader([&] {
        while (!done.load()) {
            seen.insert(graph_->read().nodes("trades").size());
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    const auto t0 = Clock::now();
    ASSERT_EQ(server_->exec("INSERT INTO trades SELECT g, 1 + g % 2, 'AAPL', g % 1000, NULL, 'bulk ' || g "
                            "FROM generate_series(1000, 100999) g",
                            db),
              "");
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < until && graph_->read().nodes("trades").size() < 100001)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    done.store(true);
    reader.join();
    std::printf("cdc: a 100,000-row transaction visible %.2f s after its commit was sent\n", seconds);
    for (size_t n : seen) EXPECT_TRUE(n == 1 || n == 100001) << "a reader saw " << n << " trades: half a transaction";
    ASSERT_EQ(converge(*server_, db, *graph_), "") << run_error_;
}

TEST_F(PostgresPipelineTest, ASigkilledPipelineResumesWithNothingLostOrDoubled) {
    const std::string db = database("crash");
    const fs::path config = dir_ / "pipeline.yaml";
    {
        std::ofstream f(config);
        f << "source:\n  type: postgres\n  hostname: 127.0.0.1\n  port: " << server_->port() << "\n  database: " << db
          << "\n  username: postgres\n  slot.name: assistd_crash\n  name: pg/crash\npipeline:\n  state-dir: "
          << (dir_ / "graph").string() << "\n";
    }
    auto spawn = [&] {
        const pid_t pid = ::fork();
        if (pid == 0) {
            const int out = ::open((dir_ / "pipeline.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (out >= 0) {
                ::dup2(out, 1);
                ::dup2(out, 2);
            }
            ::execl(ASSISTD_BINARY, ASSISTD_BINARY, "pipeline", "run", "--config", config.c_str(), "--quiet",
                    static_cast<char*>(nullptr));
            ::_exit(127);
        }
        return pid;
    };
    // A write load: random inserts, updates (balances, moved references) and deletes.
    std::atomic<bool> writing{true};
    std::atomic<int> committed{0};
    std::thread writer([&] {
        std::mt19937 rng(7);
        int next_id = 1000;
        while (writing.load()) {
            const int r = static_cast<int>(rng() % 10);
            std::string sql;
            if (r < 5) {
                sql = "INSERT INTO trades VALUES (" + std::to_string(next_id++) + ", " + std::to_string(1 + rng() % 2) +
                      ", 'MSFT', " + std::to_string(rng() % 100) + ", now(), NULL)";
            } else if (r < 8) {
                sql = "UPDATE accounts SET balance = coalesce(balance, 0) + 1 WHERE id = " + std::to_string(1 + rng() % 2) +
                      "; UPDATE trades SET account_id = 3 - account_id WHERE id = " +
                      std::to_string(1000 + static_cast<int>(rng() % static_cast<unsigned>(std::max(1, next_id - 1000))));
            } else {
                sql = "DELETE FROM trades WHERE id = " +
                      std::to_string(1000 + static_cast<int>(rng() % static_cast<unsigned>(std::max(1, next_id - 1000))));
            }
            if (server_->exec("BEGIN; " + sql + "; COMMIT", db).empty()) ++committed;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    std::mt19937 rng(11);
    int kills = 0;
    for (int round = 0; round < 6; ++round) {
        const pid_t pid = spawn();
        std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 900));
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        ++kills;
    }
    // At least 150 transactions in all, however slow the machine (bounded).
    const auto write_until = Clock::now() + std::chrono::seconds(60);
    while (committed.load() < 150 && Clock::now() < write_until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    writing.store(false);
    writer.join();
    // RocksDB admits one process, so the test reads the graph between runs:
    // run the pipeline a while, stop it (SIGTERM), compare; again until equal.
    std::string diff = "not compared";
    for (int attempt = 0; attempt < 20 && !diff.empty(); ++attempt) {
        const pid_t pid = spawn();
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
        auto g = knowledge::GraphStore::open((dir_ / "graph").string());
        ASSERT_TRUE(g.ok()) << g.error().message;
        diff = compare(*server_, db, **g);
    }
    std::printf("cdc: %d transactions committed under %d SIGKILLs of the pipeline; graph %s\n", committed.load(), kills,
                diff.empty() ? "equal to the tables" : diff.c_str());
    EXPECT_EQ(diff, "");
    EXPECT_GE(committed.load(), 150);
}

TEST_F(PostgresPipelineTest, BadSetupsAreClearErrors) {
    const std::string db = database("bad", "CREATE TABLE keyless (a int, b text); CREATE TABLE ok (id int PRIMARY KEY);");
    auto expect_error = [&](SourceConfig s, const std::string& wanted) {
        auto src = PostgresSource::open(s, std::nullopt);
        ASSERT_FALSE(src.ok()) << wanted;
        EXPECT_NE(src.error().message.find(wanted), std::string::npos) << src.error().message;
    };
    SourceConfig s = source(db);
    s.tables = {"keyless"};
    s.publication = "p_keyless";
    expect_error(s, "table public.keyless has no primary key");
    s = source(db);
    s.tables = {"missing_table"};
    s.publication = "p_missing";
    expect_error(s, "does not exist");
    s = source(db);
    s.username = "nobody";
    expect_error(s, "cannot connect");
    s = source(db);
    s.port = 1;  // nothing listens there
    expect_error(s, "cannot connect");
    // A graph whose slot is gone cannot go on: it says how to rebuild.
    s = source(db);
    s.tables = {"ok"};
    s.publication = "p_ok";
    s.slot_name = "never_made";
    auto gone = PostgresSource::open(s, std::string("0/1000000"));
    ASSERT_FALSE(gone.ok());
    EXPECT_NE(gone.error().message.find("'never_made' is gone"), std::string::npos) << gone.error().message;
    EXPECT_NE(gone.error().message.find("remove its state directory"), std::string::npos) << gone.error().message;
}

TEST(PostgresWalLevel, AServerWithoutLogicalWalIsRefusedSayingWhatToSet) {
    if (const std::string why = PostgresServer::unavailable(); !why.empty()) GTEST_SKIP() << why;
    PostgresServer server("wal_level = replica");
    ASSERT_TRUE(server.started()) << server.error();
    SourceConfig s;
    s.port = server.port();
    s.database = "postgres";
    s.username = "postgres";
    s.slot_name = s.publication = "assistd";
    auto src = PostgresSource::open(s, std::nullopt);
    ASSERT_FALSE(src.ok());
    EXPECT_NE(src.error().message.find("wal_level is 'replica'"), std::string::npos) << src.error().message;
    EXPECT_NE(src.error().message.find("wal_level = logical"), std::string::npos) << src.error().message;
}

}  // namespace
}  // namespace assistd::cdc
