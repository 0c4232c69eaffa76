#include "knowledge/retrieval.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include "knowledge/names.h"

namespace assistd::knowledge {
namespace {

namespace fs = std::filesystem;

TEST(Names, WordsAreLowerCasedAcrossScriptsAndNumbersAreNoNames) {
    EXPECT_EQ(name_words("Ada L.,  met BOB!"), (std::vector<std::string>{"ada", "l", "met", "bob"}));
    EXPECT_EQ(name_of("Ada L."), "ada l");
    EXPECT_EQ(name_of("7203.T"), "7203 t");
    EXPECT_EQ(name_of("ZOË"), "zoë");
    EXPECT_EQ(name_of("ΑΘΗΝΑ"), "αθηνα");
    EXPECT_EQ(name_of("トヨタ自動車"), "トヨタ自動車");
    EXPECT_EQ(name_of("100.25"), "") << "a number is no name";
    EXPECT_EQ(name_of(""), "");
    EXPECT_EQ(name_of("one two three four five six seven eight nine"), "") << "a sentence is no name";
    EXPECT_EQ(name_words("\xff\xfe ok"), (std::vector<std::string>{"ok"})) << "invalid bytes split words";
}

class RetrievalTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("assistd-retrieval-" + std::to_string(std::random_device{}()));
        graph_ = std::move(GraphStore::open(dir_.string()).value());
        GraphBatch b;
        b.source = "pg";
        b.position = "0/42";
        auto node = [&](const std::string& label, const std::string& key, Properties p) {
            GraphChange c;
            c.kind = GraphChange::Kind::kUpsertNode;
            c.node = {{label, key}, std::move(p)};
            b.changes.push_back(std::move(c));
        };
        auto edge = [&](NodeRef from, const std::string& type, NodeRef to) {
            GraphChange c;
            c.kind = GraphChange::Kind::kSetEdges;
            c.edge.from = std::move(from);
            c.edge.type = type;
            c.targets = {std::move(to)};
            b.changes.push_back(std::move(c));
        };
        node("accounts", "1", {{"id", "1"}, {"name", "Ada Lovelace"}});
        node("accounts", "2", {{"id", "2"}, {"name", "Ada"}});
        node("instruments", "AAPL", {{"symbol", "AAPL"}, {"name", "Apple"}});
        node("trades", "10", {{"id", "10"}, {"qty", "100.25"}});
        edge({"trades", "10"}, "ACCOUNT", {"accounts", "1"});
        edge({"trades", "10"}, "SYMBOL", {"instruments", "AAPL"});
        ASSERT_TRUE(graph_->apply(b).ok());
    }
    void TearDown() override {
        graph_.reset();
        fs::remove_all(dir_);
    }
    fs::path dir_;
    std::unique_ptr<GraphStore> graph_;
};

TEST_F(RetrievalTest, TheNamedEntityAndItsNeighbourhoodBecomeFacts) {
    RetrievalOptions o;
    o.hops = 2;
    const Context c = retrieve(graph_->read(), "What did ada lovelace buy?", o);
    ASSERT_EQ(c.entities.size(), 1u) << "the longer name wins over 'Ada'";
    EXPECT_EQ(c.entities[0], (NodeRef{"accounts", "1"}));
    ASSERT_GE(c.facts.size(), 4u);
    EXPECT_EQ(c.facts[0], "accounts:1 {id: 1, name: Ada Lovelace}");
    EXPECT_EQ(c.facts[1], "trades:10 -[ACCOUNT]-> accounts:1");
    EXPECT_EQ(c.facts[2], "trades:10 {id: 10, qty: 100.25}");
    EXPECT_NE(std::find(c.facts.begin(), c.facts.end(), "trades:10 -[SYMBOL]-> instruments:AAPL"), c.facts.end())
        << "two hops away";
    EXPECT_EQ(c.positions.at("pg"), "0/42");
    const std::string text = c.text();
    EXPECT_EQ(text.rfind("Facts from the knowledge graph (as of pg 0/42):\n", 0), 0u) << text;

    o.hops = 1;
    const Context near = retrieve(graph_->read(), "ada lovelace", o);
    EXPECT_EQ(std::find(near.facts.begin(), near.facts.end(), "trades:10 -[SYMBOL]-> instruments:AAPL"), near.facts.end());
}

TEST_F(RetrievalTest, TheBudgetCutsFactsAndNothingNamedGivesNothing) {
    RetrievalOptions o;
    o.hops = 2;
    o.max_tokens = 20;
    const Context c = retrieve(graph_->read(), "AAPL", o);
    EXPECT_TRUE(c.truncated);
    EXPECT_LE(c.tokens, 20u);
    EXPECT_FALSE(c.facts.empty());
    const Context none = retrieve(graph_->read(), "Tell me a story about 100.25 dragons", o);
    EXPECT_TRUE(none.entities.empty());
    EXPECT_EQ(none.text(), "");
}

TEST_F(RetrievalTest, RenamedAndDeletedNodesLeaveTheNameIndexAtOnce) {
    GraphBatch b;
    GraphChange rename;
    rename.kind = GraphChange::Kind::kUpsertNode;
    rename.node = {{"accounts", "1"}, {{"id", "1"}, {"name", "Countess Lovelace"}}};
    GraphChange gone;
    gone.kind = GraphChange::Kind::kDeleteNode;
    gone.node.ref = {"instruments", "AAPL"};
    b.changes = {rename, gone};
    ASSERT_TRUE(graph_->apply(b).ok());
    const auto r = graph_->read();
    EXPECT_TRUE(r.named("ada lovelace").empty());
    EXPECT_EQ(r.named("countess lovelace").size(), 1u);
    EXPECT_TRUE(r.named("apple").empty());
    EXPECT_TRUE(r.named("aapl").empty());
    const Context c = retrieve(r, "countess lovelace", RetrievalOptions{});
    for (const auto& f : c.facts) EXPECT_EQ(f.find("instruments:AAPL"), std::string::npos) << f;
}

}  // namespace
}  // namespace assistd::knowledge
