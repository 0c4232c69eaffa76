// Sessions keyed by (tenant, id): the key encoding, reads and lists that see
// only the caller's tenant, and sessions earlier versions stored under the
// bare id.
#include "state/tenant_sessions.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "state/durable_session_store.h"

namespace assistd::state {
namespace {

class TenantSessionsTest : public ::testing::Test {
  protected:
    void SetUp() override {
        base_ = std::filesystem::temp_directory_path() /
                ("assistd_tenant_sessions_" + std::to_string(getpid()) + "_" +
                 ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::remove_all(base_);
    }
    void TearDown() override { std::filesystem::remove_all(base_); }

    std::unique_ptr<DurableSessionStore> open(const std::string& name, crdt::ReplicaId replica) {
        DurableSessionStoreOptions o;
        o.path = (base_ / name).string();
        o.replica_id = replica;
        auto s = DurableSessionStore::open(o, clock_);
        EXPECT_TRUE(s.ok()) << s.error().message;
        return std::move(s).value();
    }

    // A tenant's new session with these user messages, as the server writes it.
    static void start(SessionStore& store, const std::string& tenant, const std::string& id,
                      const std::vector<std::string>& contents) {
        const std::string key = tenant_session_key(tenant, id);
        ASSERT_TRUE(store.create(key, tenant, contents.front()).ok()) << key;
        for (const auto& c : contents)
            ASSERT_TRUE(store.append_message(key, {"user", c}).ok()) << key;
    }

    static std::vector<std::string> contents(const Session& s) {
        std::vector<std::string> out;
        for (const auto& m : s.messages) out.push_back(m.content);
        return out;
    }

    // Every change of `from` applied to `to`, as replication would.
    static void copy_all(SessionStore& from, SessionStore& to) {
        for (const auto& v : from.list_versions()) {
            auto delta = from.changes_since(v.id, {});
            ASSERT_TRUE(delta.ok()) << v.id;
            ASSERT_TRUE(to.apply(v.id, *delta).ok()) << v.id;
        }
    }

    std::filesystem::path base_;
    ManualClock clock_;
};

TEST(TenantSessionKey, IsInjectiveAndKeepsTheOpenServersBareIds) {
    EXPECT_EQ(tenant_session_key("", "chat-1"), "chat-1");
    EXPECT_EQ(tenant_session_key("acme", "chat-1"), "acme:chat-1");
    // Names built from every character the two alphabets share or do not share.
    const std::vector<std::string> tenants = {"",    "a",  "b",  "ab", "a.b", "a-b",
                                              "a_b", "a.", ".a", "-",  "_",   "A"};
    const std::vector<std::string> ids = {"a", "b", "ab", "a-b", "a_b", "b-", "-", "_", "A", "ba"};
    std::set<std::string> keys;
    for (const auto& t : tenants)
        for (const auto& id : ids) {
            const std::string key = tenant_session_key(t, id);
            EXPECT_TRUE(keys.insert(key).second)
                << "(" << t << ", " << id << ") collides at " << key;
            // The first separator ends the tenant; none means the tenant "".
            const size_t sep = key.find(kTenantKeySeparator);
            EXPECT_EQ(sep == std::string::npos ? std::string() : key.substr(0, sep), t) << key;
            EXPECT_EQ(sep == std::string::npos ? key : key.substr(sep + 1), id) << key;
        }
}

TEST_F(TenantSessionsTest, OneIdUnderTwoTenantsIsTwoSessions) {
    auto s = open("a", 1);
    start(*s, "acme", "chat", {"acme asks", "acme again"});
    start(*s, "globex", "chat", {"globex asks"});
    auto acme = find_tenant_session(*s, "acme", "chat");
    auto globex = find_tenant_session(*s, "globex", "chat");
    ASSERT_TRUE(acme.ok() && globex.ok());
    EXPECT_EQ(contents(acme->session), (std::vector<std::string>{"acme asks", "acme again"}));
    EXPECT_EQ(contents(globex->session), std::vector<std::string>{"globex asks"});
    EXPECT_EQ(acme->session.id, "chat") << "the tenant's id, not the key";
    EXPECT_NE(acme->key, globex->key);

    const auto listed = list_tenant_sessions(*s, "acme");
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].session.id, "chat");
    EXPECT_EQ(listed[0].session.messages.size(), 2u);

    // Deleting one tenant's session leaves the other's as it was.
    ASSERT_TRUE(s->remove(acme->key).ok());
    EXPECT_EQ(find_tenant_session(*s, "acme", "chat").error().code, ErrorCode::kNotFound);
    ASSERT_TRUE(find_tenant_session(*s, "globex", "chat").ok());
    EXPECT_EQ(contents(find_tenant_session(*s, "globex", "chat")->session),
              std::vector<std::string>{"globex asks"});
}

TEST_F(TenantSessionsTest, AnotherTenantsSessionReadsWordForWordAsAnUnusedId) {
    auto s = open("a", 1);
    start(*s, "acme", "taken", {"secret"});
    start(*s, "acme", "gone", {"deleted"});
    ASSERT_TRUE(s->remove(tenant_session_key("acme", "gone")).ok());
    for (const std::string id : {"taken", "gone", "never"}) {
        auto r = find_tenant_session(*s, "globex", id);
        ASSERT_FALSE(r.ok()) << id;
        EXPECT_EQ(r.error().code, ErrorCode::kNotFound) << id;
        EXPECT_EQ(r.error().message, "session '" + id + "' does not exist");
    }
    EXPECT_TRUE(list_tenant_sessions(*s, "globex").empty());
    EXPECT_TRUE(list_tenant_sessions(*s, "").empty()) << "the open server's tenant is a tenant too";
}

// Two stores that do not see each other (two sides of a partition) each
// create the id for another tenant; once their changes cross, each store
// holds both sessions apart.
TEST_F(TenantSessionsTest, CreatesOfOneIdByTwoTenantsOnTwoReplicasStayApartWhenMerged) {
    auto left = open("left", 1);
    auto right = open("right", 2);
    start(*left, "acme", "chat", {"acme on the left"});
    start(*right, "globex", "chat", {"globex on the right"});
    copy_all(*left, *right);
    copy_all(*right, *left);
    for (auto* store : {left.get(), right.get()}) {
        auto acme = find_tenant_session(*store, "acme", "chat");
        auto globex = find_tenant_session(*store, "globex", "chat");
        ASSERT_TRUE(acme.ok() && globex.ok());
        EXPECT_EQ(contents(acme->session), std::vector<std::string>{"acme on the left"});
        EXPECT_EQ(contents(globex->session), std::vector<std::string>{"globex on the right"});
        EXPECT_EQ(acme->session.tenant, "acme");
        EXPECT_EQ(globex->session.tenant, "globex");
        EXPECT_EQ(store->list_versions().size(), 2u);
    }
}

// State directories of earlier versions hold every session under its bare
// id, with the tenant in the document: read (and written) where they are.
TEST_F(TenantSessionsTest, SessionsOfEarlierVersionsAreFoundUnderTheirBareIdByTheirTenantOnly) {
    {
        auto s = open("a", 1);
        ASSERT_TRUE(s->create("old", "acme", "before the upgrade").ok());
        ASSERT_TRUE(s->append_message("old", {"user", "stored by an earlier version"}).ok());
        ASSERT_TRUE(s->create("older", "acme", "deleted later").ok());
    }
    auto s = open("a", 1);  // reopened, as after an upgrade
    auto old = find_tenant_session(*s, "acme", "old");
    ASSERT_TRUE(old.ok()) << old.error().message;
    EXPECT_EQ(old->key, "old");
    EXPECT_EQ(contents(old->session), std::vector<std::string>{"stored by an earlier version"});
    EXPECT_EQ(find_tenant_session(*s, "globex", "old").error().code, ErrorCode::kNotFound);
    EXPECT_EQ(find_tenant_session(*s, "", "old").error().code, ErrorCode::kNotFound)
        << "an open server's caller is not acme";
    auto listed = list_tenant_sessions(*s, "acme");
    ASSERT_EQ(listed.size(), 2u);

    // Once the keyed session exists (made while the old copy was out of reach), it is the one found
    // and listed; a deleted keyed session does not bring the old copy back.
    start(*s, "acme", "old", {"keyed"});
    EXPECT_EQ(contents(find_tenant_session(*s, "acme", "old")->session),
              std::vector<std::string>{"keyed"});
    start(*s, "acme", "older", {"keyed, then deleted"});
    ASSERT_TRUE(s->remove(tenant_session_key("acme", "older")).ok());
    EXPECT_EQ(find_tenant_session(*s, "acme", "older").error().code, ErrorCode::kNotFound);
    listed = list_tenant_sessions(*s, "acme");
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].session.id, "old");
    EXPECT_EQ(listed[0].key, tenant_session_key("acme", "old"));
}

TEST_F(TenantSessionsTest, TheLongestTenantAndIdFitInAKey) {
    auto s = open("a", 1);
    const std::string tenant(64, 't'), id(128, 'i');
    start(*s, tenant, id, {"long"});
    auto found = find_tenant_session(*s, tenant, id);
    ASSERT_TRUE(found.ok()) << found.error().message;
    EXPECT_EQ(found->session.id, id);
    EXPECT_EQ(found->key.size(), 64u + 1 + 128);
}

}  // namespace
}  // namespace assistd::state
