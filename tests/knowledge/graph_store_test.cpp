#include "knowledge/graph_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

namespace assistd::knowledge {
namespace {

namespace fs = std::filesystem;

class GraphStoreTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("assistd-graph-" + std::to_string(std::random_device{}()));
        auto g = GraphStore::open(dir_.string());
        ASSERT_TRUE(g.ok()) << g.error().message;
        graph_ = std::move(*g);
    }
    void TearDown() override {
        graph_.reset();
        fs::remove_all(dir_);
    }
    static GraphChange upsert(const std::string& label, const std::string& key, Properties p = {}) {
        GraphChange c;
        c.kind = GraphChange::Kind::kUpsertNode;
        c.node = {{label, key}, std::move(p)};
        return c;
    }
    static GraphChange set_edges(const NodeRef& from, const std::string& type, std::vector<NodeRef> to) {
        GraphChange c;
        c.kind = GraphChange::Kind::kSetEdges;
        c.edge.from = from;
        c.edge.type = type;
        c.targets = std::move(to);
        return c;
    }
    static GraphChange remove(const std::string& label, const std::string& key) {
        GraphChange c;
        c.kind = GraphChange::Kind::kDeleteNode;
        c.node.ref = {label, key};
        return c;
    }
    Status apply(std::vector<GraphChange> changes, const std::string& position = "") {
        GraphBatch b;
        b.source = position.empty() ? "" : "src";
        b.position = position;
        b.changes = std::move(changes);
        return graph_->apply(b);
    }
    fs::path dir_;
    std::unique_ptr<GraphStore> graph_;
};

TEST_F(GraphStoreTest, NodesEdgesAndThePositionLandTogether) {
    const NodeRef ada{"accounts", "1"}, trade{"trades", "10"}, aapl{"instruments", "AAPL"};
    ASSERT_TRUE(apply({upsert("accounts", "1", {{"name", "Ada"}}), upsert("instruments", "AAPL"),
                       upsert("trades", "10", {{"qty", "100.25"}}), set_edges(trade, "ACCOUNT", {ada}),
                       set_edges(trade, "SYMBOL", {aapl})},
                      "0/10")
                    .ok());
    const auto r = graph_->read();
    EXPECT_EQ(r.node(ada)->properties.at("name"), "Ada");
    ASSERT_EQ(r.out_edges(trade).size(), 2u);
    ASSERT_EQ(r.in_edges(ada).size(), 1u);
    EXPECT_EQ(r.in_edges(ada)[0].from, trade);
    EXPECT_EQ(r.position("src"), "0/10");
    EXPECT_EQ(graph_->position("src"), "0/10");
    EXPECT_FALSE(graph_->position("other"));
}

TEST_F(GraphStoreTest, AReaderSeesOneMomentNotHalfATransaction) {
    ASSERT_TRUE(apply({upsert("a", "1", {{"v", "old"}})}).ok());
    const auto before = graph_->read();
    ASSERT_TRUE(apply({upsert("a", "1", {{"v", "new"}}), upsert("a", "2")}).ok());
    EXPECT_EQ(before.node({"a", "1"})->properties.at("v"), "old");
    EXPECT_FALSE(before.node({"a", "2"}));
    EXPECT_EQ(before.nodes("a").size(), 1u);
    EXPECT_EQ(graph_->read().nodes("a").size(), 2u);
}

TEST_F(GraphStoreTest, SettingEdgesReplacesTheTypeAndDeletesTakeOutEdgesAlong) {
    const NodeRef t{"trades", "10"}, a1{"accounts", "1"}, a2{"accounts", "2"};
    // In one batch: an edge to 1, then moved to 2, then the row is updated again: one edge, to 2.
    ASSERT_TRUE(apply({upsert("trades", "10"), set_edges(t, "ACCOUNT", {a1}), set_edges(t, "ACCOUNT", {a2}),
                       set_edges(t, "OTHER", {a1})})
                    .ok());
    auto r = graph_->read();
    ASSERT_EQ(r.out_edges(t).size(), 2u);
    EXPECT_TRUE(r.in_edges(a1).size() == 1 && r.in_edges(a1)[0].type == "OTHER");
    ASSERT_TRUE(apply({set_edges(t, "OTHER", {})}).ok());
    EXPECT_TRUE(graph_->read().in_edges(a1).empty()) << "a NULL reference leaves no edge";
    // Inserted and deleted in one transaction: nothing is left, edges included.
    ASSERT_TRUE(apply({upsert("trades", "11"), set_edges({"trades", "11"}, "ACCOUNT", {a2}), remove("trades", "11")}).ok());
    r = graph_->read();
    EXPECT_FALSE(r.node({"trades", "11"}));
    EXPECT_EQ(r.in_edges(a2).size(), 1u);
    ASSERT_TRUE(apply({remove("trades", "10")}).ok());
    r = graph_->read();
    EXPECT_TRUE(r.in_edges(a2).empty());
    EXPECT_TRUE(r.edges().empty());
}

TEST_F(GraphStoreTest, AnUpdateKeepsThePropertiesItDidNotResend) {
    ASSERT_TRUE(apply({upsert("docs", "1", {{"title", "t"}, {"body", "a long text"}})}).ok());
    GraphChange c = upsert("docs", "1", {{"title", "t2"}});
    c.keep = {"body", "missing"};
    ASSERT_TRUE(apply({c}).ok());
    const auto n = graph_->read().node({"docs", "1"});
    EXPECT_EQ(n->properties.at("title"), "t2");
    EXPECT_EQ(n->properties.at("body"), "a long text");
    EXPECT_EQ(n->properties.count("missing"), 0u);
}

TEST_F(GraphStoreTest, ATruncateDeletesEveryNodeOfItsLabel) {
    ASSERT_TRUE(apply({upsert("a", "1"), upsert("a", "2"), upsert("ab", "1"), set_edges({"a", "1"}, "R", {{"ab", "1"}})}).ok());
    GraphChange t;
    t.kind = GraphChange::Kind::kDeleteLabel;
    t.node.ref.label = "a";
    ASSERT_TRUE(apply({t}).ok());
    const auto r = graph_->read();
    EXPECT_TRUE(r.nodes("a").empty());
    EXPECT_EQ(r.nodes("ab").size(), 1u) << "a label that starts the same is another label";
    EXPECT_TRUE(r.edges().empty());
}

TEST_F(GraphStoreTest, KeysAndValuesWithSeparatorsAndUnicodeRoundTrip) {
    const std::string key = std::string("a|b\\c") + "\xE2\x82\xAC";
    ASSERT_TRUE(apply({upsert("t", key, {{"name", "Zo\xC3\xAB"}, {"empty", ""}})}).ok());
    const auto n = graph_->read().node({"t", key});
    ASSERT_TRUE(n);
    EXPECT_EQ(n->properties.at("name"), "Zo\xC3\xAB");
    EXPECT_EQ(n->properties.at("empty"), "");
}

TEST(GraphProperties, DecodingRefusesDamagedBytes) {
    const std::string good = encode_properties({{"a", "1"}, {"bb", "22"}});
    ASSERT_TRUE(decode_properties(good));
    for (size_t cut = 0; cut < good.size(); ++cut) EXPECT_FALSE(decode_properties(good.substr(0, cut))) << cut;
    EXPECT_FALSE(decode_properties(good + "x")) << "trailing bytes";
    EXPECT_FALSE(decode_properties("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")) << "an absurd count";
}

}  // namespace
}  // namespace assistd::knowledge
