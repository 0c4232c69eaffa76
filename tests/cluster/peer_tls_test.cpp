// The certificate rule (peer_tls.h): which certificates name which node, and
// the checks a node makes of its own files before it listens.
#include "cluster/peer_tls.h"

#include <gtest/gtest.h>

#include <fstream>

#include "cluster/peer_certs.h"
#include "cluster/test_fleet_ca.h"

namespace assistd::cluster {
namespace {

std::string read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(PeerTls, AnIssuedCertificateNamesItsNodeAndPassesTheChecks) {
    const TestFleetCa ca;
    const auto files = ca.issue("assistd-7f9c4-x2b");
    auto name = node_name_of_certificate(read(files.cert_path));
    ASSERT_TRUE(name.ok()) << name.error().message;
    EXPECT_EQ(*name, "assistd-7f9c4-x2b");
    auto checked = check_peer_tls_files(files);
    ASSERT_TRUE(checked.ok()) << checked.error().message;
    EXPECT_EQ(*checked, "assistd-7f9c4-x2b");
    // A hex name is the node id itself, as --node-id takes it.
    auto hex = node_name_of_certificate(read(ca.issue("3e8").cert_path));
    ASSERT_TRUE(hex.ok());
    EXPECT_EQ(*node_id_from_name(*hex), 1000u);
}

TEST(PeerTls, ACertificateWithoutANodeNameNamesNoNode) {
    const TestFleetCa ca;
    // The CA's own certificate has no assistd-node URI.
    auto name = node_name_of_certificate(ca.ca().cert);
    ASSERT_FALSE(name.ok());
    EXPECT_NE(name.error().message.find("assistd-node:<node name>"), std::string::npos);
    EXPECT_FALSE(node_name_of_certificate("not a certificate").ok());
    EXPECT_FALSE(node_name_of_certificate("").ok());
}

TEST(PeerTls, NodeNamesThatAreNotNodeIdsCannotBeIssued) {
    const TestFleetCa ca;
    EXPECT_FALSE(make_peer_certificate(ca.ca(), "has space", 1).ok());
    EXPECT_FALSE(make_peer_certificate(ca.ca(), "0", 1).ok());
    EXPECT_FALSE(make_peer_certificate(ca.ca(), "", 1).ok());
}

TEST(PeerTls, FilesThatDoNotBelongTogetherAreRefusedWithTheReason) {
    const TestFleetCa ca;
    const TestFleetCa other("other");
    const auto a = ca.issue("node-a");
    const auto b = ca.issue("node-b");
    auto st = check_peer_tls_files({a.cert_path, b.key_path, a.ca_path});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("is not the key of"), std::string::npos);
    st = check_peer_tls_files({a.cert_path, a.key_path, other.issue("x").ca_path});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("does not chain"), std::string::npos);
    st = check_peer_tls_files({a.cert_path, a.key_path, a.cert_path + ".missing"});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("cannot be read"), std::string::npos);
    st = check_peer_tls_files({a.cert_path, a.key_path, ""});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("all three"), std::string::npos);
    // A key file that is a certificate.
    st = check_peer_tls_files({a.cert_path, a.cert_path, a.ca_path});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message.find("private key"), std::string::npos);
}

TEST(PeerTls, AThrowawayFleetGivesEveryNodeFilesThatPassTheChecks) {
    const TestFleetCa scratch;  // only for its temporary directory
    auto fleet = make_throwaway_fleet((scratch.dir() / "fleet").string(), {"n0", "n1", "n2"}, 1);
    ASSERT_TRUE(fleet.ok()) << fleet.error().message;
    ASSERT_EQ(fleet->size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        auto name = check_peer_tls_files((*fleet)[i]);
        ASSERT_TRUE(name.ok()) << name.error().message;
        EXPECT_EQ(*name, std::string("n").append(std::to_string(i)));
    }
    EXPECT_EQ(read((*fleet)[0].ca_path), read((*fleet)[2].ca_path)) << "one CA for the fleet";
}

}  // namespace
}  // namespace assistd::cluster
