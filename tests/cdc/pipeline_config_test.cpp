#include "cdc/pipeline_config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include "cdc/graph_mapping.h"

namespace assistd::cdc {
namespace {

TEST(PipelineConfig, TheFlinkShapeWithAGraphSection) {
    const auto c = parse_pipeline_config(R"(
source:
  type: postgres
  hostname: db.internal
  port: 6543
  database: trading
  username: repl
  password: secret
  tables: public.trades, positions
  slot.name: node_a
  scan.startup.mode: latest-offset
graph:
  nodes:
    - table: trades
      label: Trade
      key: [id]
  edges:
    - table: trades
      columns: [account_id]
      references: accounts
      type: PLACED_BY
  foreign-keys: false
pipeline:
  name: Trading desk
  schema.change.behavior: lenient
  state-dir: /var/lib/assistd/graph
)",
                                         "p.yaml");
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_EQ(c->sources.size(), 1u);
    const SourceConfig& s = c->sources[0];
    EXPECT_EQ(s.host, "db.internal");
    EXPECT_EQ(s.port, 6543);
    EXPECT_EQ(s.tables, (std::vector<std::string>{"public.trades", "positions"}));
    EXPECT_EQ(s.slot_name, "node_a");
    EXPECT_EQ(s.publication, "assistd");
    EXPECT_EQ(s.startup, SourceConfig::StartupMode::kLatestOffset);
    EXPECT_EQ(s.name, "postgres@db.internal:6543/trading");
    ASSERT_EQ(c->tables.size(), 1u);
    EXPECT_EQ(c->tables[0].label, "Trade");
    ASSERT_EQ(c->tables[0].edges.size(), 1u);
    EXPECT_EQ(c->tables[0].edges[0].type, "PLACED_BY");
    EXPECT_FALSE(c->foreign_keys);
    EXPECT_EQ(c->state_dir, "/var/lib/assistd/graph");
}

TEST(PipelineConfig, TheBriefsShortFormAndCredentialsFromTheEnvironment) {
    ::setenv("ASSISTD_TEST_PG_PASSWORD", "from-env", 1);
    const auto c = parse_pipeline_config(R"(
sources:
  - type: postgresql
    hosts: ["db-master:5433"]
    database: shop
    username: repl
    password-env: ASSISTD_TEST_PG_PASSWORD
    include_tables: ["trades", "positions"]
)",
                                         "p.yaml");
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->sources[0].host, "db-master");
    EXPECT_EQ(c->sources[0].port, 5433);
    EXPECT_EQ(c->sources[0].password, "from-env");
    EXPECT_EQ(c->sources[0].tables.size(), 2u);
    EXPECT_TRUE(c->foreign_keys);
}

TEST(PipelineConfig, ErrorsNameTheFileTheLineAndTheKey) {
    struct Case {
        const char* yaml;
        const char* expected;
    };
    const Case cases[] = {
        {"source: [", "p.yaml:1: not valid YAML"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  colour: red\n", "p.yaml:5: 'source.colour': unknown key"},
        {"source:\n  type: oracle\n", "p.yaml:2: 'source.type': must be postgres or mysql"},
        {"source:\n  type: postgres\n  username: u\n", "'source.database': is required"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  port: 99999\n", "p.yaml:5: 'source.port': must be a whole number"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  scan.startup.mode: earliest\n",
         "'source.scan.startup.mode': must be initial, latest-offset or specific-offset"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  scan.startup.mode: specific-offset\n",
         "'source.scan.startup.specific-offset': is required"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  password-env: ASSISTD_NOT_SET_ANYWHERE\n",
         "the variable ASSISTD_NOT_SET_ANYWHERE is not set"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  password: a\n  password-file: /nonexistent\n",
         "cannot read /nonexistent"},
        {"source:\n  type: postgres\n  database: d\n  username: u\n  server-id: 5\n", "'source.server-id': is for mysql sources"},
        {"sources:\n  - type: mysql\n    hosts: [\"db-master:3306\"]\n    include_tables: [\"trades\", \"positions\"]\n",
         "the mysql/mariadb binlog source is not in this build yet"},
        {"source:\n  type: postgres\n  database: d\n  username: u\nsinks:\n  - type: neo4j\n    uri: bolt://g:7687\n    batch_size: 100\n",
         "'neo4j' is not a sink of this build"},
        {"source:\n  type: postgres\n  database: d\n  username: u\ngraph:\n  nodes:\n    - label: X\n", "'graph.nodes[0].table': is required"},
        {"source:\n  type: postgres\n  database: d\n  username: u\ngraph:\n  edges:\n    - table: t\n      columns: [a]\n",
         "'graph.edges[0].references': is required"},
        {"source:\n  type: postgres\n  database: d\n  username: u\npipeline:\n  schema.change.behavior: maybe\n",
         "'pipeline.schema.change.behavior': must be lenient, ignore or exception"},
        {"source:\n  type: postgres\n  database: d\n  username: u\nroute:\n  - source-table: a\n", "'route': is not supported yet"},
        {"- a\n- b\n", "the file must be a mapping"},
        {"pipeline:\n  name: x\n", "'source': is required"},
    };
    for (const auto& c : cases) {
        const auto r = parse_pipeline_config(c.yaml, "p.yaml");
        ASSERT_FALSE(r.ok()) << c.yaml;
        EXPECT_NE(r.error().message.find(c.expected), std::string::npos) << r.error().message << "\nwanted: " << c.expected;
    }
    EXPECT_FALSE(load_pipeline_config("/nonexistent/p.yaml").ok());
}

TEST(GraphMapping, KeysEscapeTheirSeparatorAndEdgeTypesComeFromColumns) {
    EXPECT_EQ(GraphMapping::key_text({"1"}), "1");
    EXPECT_EQ(GraphMapping::key_text({"a|b", "c"}), "a\\|b|c");
    EXPECT_NE(GraphMapping::key_text({"a|b"}), GraphMapping::key_text({"a", "b"}));
    EXPECT_EQ(GraphMapping::default_edge_type({"account_id"}), "ACCOUNT");
    EXPECT_EQ(GraphMapping::default_edge_type({"owner"}), "OWNER");
    EXPECT_EQ(GraphMapping::default_edge_type({"_id"}), "_ID");
}

TEST(GraphMapping, RowChangesBecomeNodesAndEdges) {
    TableMapping trades{"trades", "", {}, {}, {ForeignKey{{"account_id"}, "public.accounts", {"id"}, ""}}};
    GraphMapping m({trades}, true);
    SourceTransaction txn;
    txn.position = "0/20";
    RowChange ins;
    ins.schema = "public";
    ins.table = "trades";
    ins.key_columns = {"id"};
    ins.after = {{"id", "10", false}, {"account_id", "1", false}, {"note", std::nullopt, false}};
    txn.rows.push_back(ins);
    RowChange moved = ins;  // an update that changes the key: the old node goes
    moved.op = RowChange::Op::kUpdate;
    moved.before = {{"id", "10", false}};
    moved.after = {{"id", "11", false}, {"account_id", std::nullopt, false}, {"note", "x", true}};
    txn.rows.push_back(moved);
    RowChange other;  // an unmapped table is mapped by default
    other.table = "audit";
    other.key_columns = {"k"};
    other.after = {{"k", "a", false}};
    txn.rows.push_back(other);
    auto b = m.map(txn, "src");
    ASSERT_TRUE(b.ok()) << b.error().message;
    EXPECT_EQ(b->position, "0/20");
    using K = knowledge::GraphChange::Kind;
    std::vector<K> kinds;
    for (const auto& c : b->changes) kinds.push_back(c.kind);
    EXPECT_EQ(kinds, (std::vector<K>{K::kUpsertNode, K::kSetEdges, K::kDeleteNode, K::kUpsertNode, K::kSetEdges,
                                     K::kUpsertNode}));
    EXPECT_EQ(b->changes[0].node.properties.count("note"), 0u) << "NULL is no property";
    EXPECT_EQ(b->changes[1].targets, (std::vector<knowledge::NodeRef>{{"accounts", "1"}}));
    EXPECT_EQ(b->changes[2].node.ref, (knowledge::NodeRef{"trades", "10"}));
    EXPECT_EQ(b->changes[3].keep, (std::vector<std::string>{"note"}));
    EXPECT_TRUE(b->changes[4].targets.empty()) << "a NULL reference: no edge";
    EXPECT_EQ(b->changes[5].node.ref.label, "audit");

    GraphMapping strict({trades}, false);
    EXPECT_EQ(strict.map(txn, "src")->changes.size(), 5u) << "unlisted tables skipped";
    RowChange keyless = other;
    keyless.table = "logs";
    keyless.key_columns.clear();
    SourceTransaction bad;
    bad.rows.push_back(keyless);
    auto refused = m.map(bad, "src");
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("has no primary key"), std::string::npos);
}

}  // namespace
}  // namespace assistd::cdc
