#include "cluster/node_identity.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace assistd::cluster {
namespace {

class NodeIdentityTest : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() /
               ("assistd-node-id-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::remove_all(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::filesystem::path dir_;
};

TEST_F(NodeIdentityTest, KeptAcrossStartsWithANewIncarnationEachTime) {
    auto first = load_node_identity(dir_.string(), 0xabcdef);
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ(first->node_id, 0xabcdefu);
    EXPECT_EQ(first->incarnation, 1u);
    auto second = load_node_identity(dir_.string(), 0x1234);  // the fresh id is ignored now
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(second->node_id, 0xabcdefu);
    EXPECT_EQ(second->incarnation, 2u);
    EXPECT_NE(first->replica_id, second->replica_id)
        << "two lives of a node must never share a replica id";
    EXPECT_EQ(second->replica_id, replica_id_for(0xabcdef, 2));
    EXPECT_NE(replica_id_for(1, 1), replica_id_for(2, 1));
    EXPECT_NE(replica_id_for(1, 1), 0u);
}

TEST_F(NodeIdentityTest, ACorruptFileIsAClearError) {
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "node-id") << "node_id=zz\n";
    auto r = load_node_identity(dir_.string(), 5);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
    EXPECT_NE(r.error().message.find("node-id"), std::string::npos) << r.error().message;

    std::ofstream(dir_ / "node-id") << "incarnation=3\n";
    r = load_node_identity(dir_.string(), 5);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("no node_id"), std::string::npos) << r.error().message;

    std::ofstream(dir_ / "node-id") << "node_id=00000000000000ab\nincarnation=x\n";
    r = load_node_identity(dir_.string(), 5);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("incarnation"), std::string::npos) << r.error().message;
}

TEST_F(NodeIdentityTest, AZeroFreshIdIsRejected) {
    auto r = load_node_identity(dir_.string(), 0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
}

TEST_F(NodeIdentityTest, AnUnwritableDirectoryIsAnIoError) {
    if (::geteuid() == 0) GTEST_SKIP() << "root writes anywhere: permissions cannot be tested";
    std::filesystem::create_directories(dir_);
    ::chmod(dir_.c_str(), 0500);
    auto r = load_node_identity(dir_.string(), 5);
    ::chmod(dir_.c_str(), 0700);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kIo);
}

TEST_F(NodeIdentityTest, AnOperatorChosenIdMustMatchTheStateDirectory) {
    auto first = load_node_identity_as(dir_.string(), 0x77);
    ASSERT_TRUE(first.ok()) << first.error().message;
    EXPECT_EQ(first->node_id, 0x77u);
    auto again = load_node_identity_as(dir_.string(), 0x77);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->incarnation, 2u);
    auto other = load_node_identity_as(dir_.string(), 0x78);
    ASSERT_FALSE(other.ok());
    EXPECT_EQ(other.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(other.error().message.find("belongs to node 0000000000000077"), std::string::npos)
        << other.error().message;
}

TEST(NodeIdParsing, NamesHashToStableIdsAndHexStaysHex) {
    EXPECT_EQ(node_id_from_name("ff").value(), 255u);
    const auto pod = node_id_from_name("assistd-7d9f8c6b5-x2kqz");
    ASSERT_TRUE(pod.ok());
    EXPECT_NE(*pod, 0u);
    EXPECT_EQ(node_id_from_name("assistd-7d9f8c6b5-x2kqz").value(), *pod);
    EXPECT_NE(node_id_from_name("assistd-7d9f8c6b5-x2kqy").value(), *pod);
    for (const char* bad : {"", "0", "has space", "a/b", "é"}) {
        auto r = node_id_from_name(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    }
    EXPECT_FALSE(node_id_from_name(std::string(254, 'a')).ok());
}

TEST(NodeIdParsing, AcceptsHexAndRejectsTheRest) {
    EXPECT_EQ(parse_node_id("ff").value(), 255u);
    EXPECT_EQ(parse_node_id("FFFFFFFFFFFFFFFF").value(), ~0ull);
    EXPECT_EQ(format_node_id(255), "00000000000000ff");
    for (const char* bad : {"", "0", "000", "xyz", "12345678901234567", "-1", "1 "}) {
        auto r = parse_node_id(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
        EXPECT_FALSE(r.error().message.empty());
    }
}

}  // namespace
}  // namespace assistd::cluster
