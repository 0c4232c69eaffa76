#include "cluster/messages.h"

#include <gtest/gtest.h>

#include <set>

namespace assistd::cluster {
namespace {

using state::crdt::VersionVector;

VersionVector vv(std::initializer_list<std::pair<uint64_t, uint64_t>> entries) {
    VersionVector v;
    for (auto [r, l] : entries) v.set(r, l);
    return v;
}

std::vector<Message> samples() {
    std::vector<Message> out;
    Message hb;
    hb.kind = MessageKind::kHeartbeat;
    hb.from = 7;
    hb.from_address = "10.0.0.1:7000";
    out.push_back(hb);

    Message d = hb;
    d.kind = MessageKind::kDeltas;
    d.id = 42;
    d.deltas = {{"s1", std::string("\x01\xAD\x01\x00", 4)}, {"s2", ""}};
    out.push_back(d);

    Message a = hb;
    a.kind = MessageKind::kAck;
    a.id = 42;
    a.states = {{"s1", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}})},
                {"s2", SessionState::Kind::kDeleted, {}},
                {"s3", SessionState::Kind::kMissing, {}}};
    out.push_back(a);

    Message g = hb;
    g.kind = MessageKind::kDigest;
    g.id = 5;
    g.buckets = {0, 1, ~0ull, 77};
    g.states = {{"offered", SessionState::Kind::kLive, vv({{1, 1}})}};
    out.push_back(g);

    Message s = g;
    s.kind = MessageKind::kSummary;
    s.buckets = {3, 200};
    s.replies = {{"offered", SessionState::Kind::kMissing, {}}};
    out.push_back(s);

    Message p = hb;
    p.kind = MessageKind::kPull;
    p.states = {{"s9", SessionState::Kind::kMissing, {}}};
    out.push_back(p);

    Message leave = hb;
    leave.kind = MessageKind::kLeave;
    leave.id = 3;  // the leaving life's incarnation
    out.push_back(leave);

    Message leave_ack = leave;
    leave_ack.kind = MessageKind::kLeaveAck;
    out.push_back(leave_ack);
    return out;
}

// The bytes of one frame of each kind, as the encoder before typed messages
// (one struct with every field) wrote them: the wire format is pinned, so a
// node of this build and one of an older build understand each other.
struct GoldenFrame {
    Message message;
    const char* hex;
};

std::string to_hex(const std::string& bytes) {
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

std::vector<GoldenFrame> golden_frames() {
    std::vector<GoldenFrame> out;
    Message hb;
    hb.kind = MessageKind::kHeartbeat;
    hb.from = 0x1234567890abcdefull;
    hb.from_address = "10.0.0.1:7000";
    hb.id = 300;  // an incarnation that needs two varint bytes
    out.push_back({hb, "c50101ef9baf8589cf959a120d31302e302e302e313a37303030ac02"});

    Message d;
    d.kind = MessageKind::kDeltas;
    d.from = 7;
    d.from_address = "[::1]:9";
    d.id = 1000000;
    d.deltas = {{"s1", std::string("\x01\xAD\x01\x00", 4)}, {"s2", ""}};
    out.push_back({d, "c5010207075b3a3a315d3a39c0843d020273310401ad010002733200"});

    Message a;
    a.kind = MessageKind::kAck;
    a.from = 7;
    a.from_address = "h:1";
    a.id = 42;
    a.states = {{"s1", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}, {200, 70000}})},
                {"s2", SessionState::Kind::kDeleted, {}},
                {"s3", SessionState::Kind::kMissing, {}}};
    out.push_back({a, "c501030703683a312a03027331010303090c01c801f0a20402733202000273330000"});

    Message g;
    g.kind = MessageKind::kDigest;
    g.from = 7;
    g.from_address = "h:1";
    g.id = 5;
    g.buckets = {0, 1, ~0ull, 77, 300};
    g.states = {{"offered", SessionState::Kind::kLive, vv({{1, 1}})}};
    out.push_back({g, "c501040703683a3105050001ffffffffffffffffff014dac0201076f66666572656401010101"});

    Message s;
    s.kind = MessageKind::kSummary;
    s.from = 7;
    s.from_address = "h:1";
    s.id = 5;
    s.buckets = {3, 200};
    s.states = {{"a", SessionState::Kind::kLive, vv({{2, 5}})}};
    s.replies = {{"offered", SessionState::Kind::kMissing, {}},
                 {"x", SessionState::Kind::kDeleted, {}}};
    out.push_back({s, "c501050703683a31050203c8010101610101020502076f666665726564000001780200"});

    Message p;
    p.kind = MessageKind::kPull;
    p.from = 7;
    p.from_address = "h:1";
    p.id = 1;
    p.states = {{"s9", SessionState::Kind::kMissing, {}},
                {"s10", SessionState::Kind::kLive, vv({{4, 4}})}};
    out.push_back({p, "c501060703683a31010202733900000373313001010404"});

    Message l;
    l.kind = MessageKind::kLeave;
    l.from = 7;
    l.from_address = "h:1";
    l.id = 3;
    out.push_back({l, "c501070703683a3103"});

    Message la = l;
    la.kind = MessageKind::kLeaveAck;
    out.push_back({la, "c501080703683a3103"});

    Message empty_deltas;  // empty bodies and an empty address
    empty_deltas.kind = MessageKind::kDeltas;
    empty_deltas.from = 1;
    out.push_back({empty_deltas, "c5010201000000"});

    Message empty_summary;
    empty_summary.kind = MessageKind::kSummary;
    empty_summary.from = 1;
    out.push_back({empty_summary, "c50105010000000000"});
    return out;
}

TEST(ClusterMessages, EveryKindEncodesToThePinnedBytes) {
    const auto frames = golden_frames();
    std::set<MessageKind> kinds;
    for (const auto& f : frames) {
        kinds.insert(f.message.kind);
        EXPECT_EQ(to_hex(encode_message(f.message)), f.hex) << message_kind_name(f.message.kind);
        auto back = decode_message(encode_message(f.message));
        ASSERT_TRUE(back.ok()) << message_kind_name(f.message.kind) << ": " << back.error().message;
        EXPECT_EQ(*back, f.message) << message_kind_name(f.message.kind);
    }
    EXPECT_EQ(kinds.size(), 8u) << "every kind is pinned";
}

TEST(ClusterMessages, EveryKindRoundTrips) {
    EXPECT_EQ(samples().size(), 8u) << "one sample per kind";
    EXPECT_STREQ(message_kind_name(MessageKind::kLeave), "leave");
    EXPECT_STREQ(message_kind_name(MessageKind::kLeaveAck), "leave-ack");
    for (const auto& m : samples()) {
        auto back = decode_message(encode_message(m));
        ASSERT_TRUE(back.ok()) << message_kind_name(m.kind) << ": " << back.error().message;
        EXPECT_EQ(*back, m) << message_kind_name(m.kind);
    }
}

TEST(ClusterMessages, EveryTruncationAndTrailingByteIsRejected) {
    for (const auto& m : samples()) {
        const std::string bytes = encode_message(m);
        for (size_t n = 0; n < bytes.size(); ++n) {
            auto r = decode_message(std::string_view(bytes.data(), n));
            ASSERT_FALSE(r.ok()) << message_kind_name(m.kind) << " cut to " << n << " bytes";
            EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
        }
        auto r = decode_message(bytes + "x");
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("trailing"), std::string::npos) << r.error().message;
    }
}

TEST(ClusterMessages, BadHeadersSayWhatIsWrong) {
    std::string bytes = encode_message(samples()[0]);
    std::string bad = bytes;
    bad[0] = 'G';  // an HTTP client on the peer port
    auto r = decode_message(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("magic"), std::string::npos);

    bad = bytes;
    bad[1] = 2;
    r = decode_message(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnsupported);
    EXPECT_NE(r.error().message.find("version 2"), std::string::npos) << r.error().message;

    bad = bytes;
    bad[2] = 9;
    r = decode_message(bad);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("kind"), std::string::npos);

    bad = bytes;
    bad[3] = 0;  // node id 0 is never valid
    r = decode_message(bad);
    ASSERT_FALSE(r.ok());
}

TEST(ClusterMessages, AbsurdCountsAndNonCanonicalVersionsAreRejected) {
    Message a = samples()[2];
    std::string bytes = encode_message(a);
    // Header: magic, version, kind, from (1 byte), address (len + 13), id (1 byte); then the count.
    const size_t count_at = 3 + 1 + 1 + a.from_address.size() + 1;
    std::string huge = bytes.substr(0, count_at) + std::string("\xff\xff\xff\xff\x0f", 5) +
                       bytes.substr(count_at + 1);
    auto r = decode_message(huge);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);

    // A version vector out of order (replica 12 before 3).
    Message m = samples()[5];
    m.states = {{"s", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}})}};
    std::string good = encode_message(m);
    const auto at = good.find(std::string("\x03\x09\x0c\x01", 4));
    ASSERT_NE(at, std::string::npos);
    std::string swapped = good;
    swapped.replace(at, 4, std::string("\x0c\x01\x03\x09", 4));
    r = decode_message(swapped);
    EXPECT_FALSE(r.ok());

    // A deleted session with a version is not canonical either.
    std::string deleted = good;
    deleted[at - 2] = static_cast<char>(SessionState::Kind::kDeleted);
    r = decode_message(deleted);
    EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace assistd::cluster
