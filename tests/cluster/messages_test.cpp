#include "cluster/messages.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "cluster/rate_usage_link.h"

namespace assistd::cluster {
namespace {

using state::crdt::VersionVector;

VersionVector vv(std::initializer_list<std::pair<uint64_t, uint64_t>> entries) {
    VersionVector v;
    for (auto [r, l] : entries) v.set(r, l);
    return v;
}

MessageHeader header(NodeId from, const std::string& address, uint64_t id) {
    MessageHeader h;
    h.from = from;
    h.from_address = address;
    h.id = id;
    return h;
}

MessageHeader from_n7(uint64_t id = 0) {
    return header(7, "10.0.0.1:7000", id);
}

std::vector<Message> samples() {
    std::vector<Message> out;
    out.push_back(Heartbeat{from_n7()});
    out.push_back(Deltas{from_n7(42), {{"s1", std::string("\x01\xAD\x01\x00", 4)}, {"s2", ""}}});
    out.push_back(Ack{from_n7(42),
                      {{"s1", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}})},
                       {"s2", SessionState::Kind::kDeleted, {}},
                       {"s3", SessionState::Kind::kMissing, {}}}});
    out.push_back(Digest{
        from_n7(5), {0, 1, ~0ull, 77}, {{"offered", SessionState::Kind::kLive, vv({{1, 1}})}}});
    out.push_back(Summary{from_n7(5),
                          {3, 200},
                          {{"offered", SessionState::Kind::kLive, vv({{1, 1}})}},
                          {{"offered", SessionState::Kind::kMissing, {}}}});
    out.push_back(Pull{from_n7(), {{"s9", SessionState::Kind::kMissing, {}}}});
    out.push_back(Leave{from_n7(3)});  // the leaving life's incarnation
    out.push_back(LeaveAck{from_n7(3)});
    return out;
}

// The bytes of one frame of each kind, captured from the encoder before
// messages were typed (one struct with every field): the wire format is pinned, so a
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
    auto with_id = [](uint64_t id) { return header(7, "h:1", id); };
    std::vector<GoldenFrame> out;
    // An id and an incarnation that need several varint bytes.
    out.push_back({Heartbeat{header(0x1234567890abcdefull, "10.0.0.1:7000", 300)},
                   "c50101ef9baf8589cf959a120d31302e302e302e313a37303030ac02"});
    out.push_back({Deltas{header(7, "[::1]:9", 1000000),
                          {{"s1", std::string("\x01\xAD\x01\x00", 4)}, {"s2", ""}}},
                   "c5010207075b3a3a315d3a39c0843d020273310401ad010002733200"});
    out.push_back({Ack{with_id(42),
                       {{"s1", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}, {200, 70000}})},
                        {"s2", SessionState::Kind::kDeleted, {}},
                        {"s3", SessionState::Kind::kMissing, {}}}},
                   "c501030703683a312a03027331010303090c01c801f0a20402733202000273330000"});
    out.push_back({Digest{with_id(5),
                          {0, 1, ~0ull, 77, 300},
                          {{"offered", SessionState::Kind::kLive, vv({{1, 1}})}}},
                   "c501040703683a3105050001ffffffffffffffffff014dac0201076f66666572656401010101"});
    out.push_back({Summary{with_id(5),
                           {3, 200},
                           {{"a", SessionState::Kind::kLive, vv({{2, 5}})}},
                           {{"offered", SessionState::Kind::kMissing, {}},
                            {"x", SessionState::Kind::kDeleted, {}}}},
                   "c501050703683a31050203c8010101610101020502076f666665726564000001780200"});
    out.push_back({Pull{with_id(kPullAnswerEvenIfCurrent),
                        {{"s9", SessionState::Kind::kMissing, {}},
                         {"s10", SessionState::Kind::kLive, vv({{4, 4}})}}},
                   "c501060703683a31010202733900000373313001010404"});
    out.push_back({Leave{with_id(3)}, "c501070703683a3103"});
    out.push_back({LeaveAck{with_id(3)}, "c501080703683a3103"});
    // Empty bodies and an empty address.
    out.push_back({Deltas{header(1, "", 0), {}}, "c5010201000000"});
    out.push_back({Summary{header(1, "", 0), {}, {}, {}}, "c50105010000000000"});
    return out;
}

TEST(ClusterMessages, EveryKindEncodesToThePinnedBytes) {
    const auto frames = golden_frames();
    std::set<MessageKind> kinds;
    for (const auto& f : frames) {
        const char* name = message_kind_name(kind_of(f.message));
        kinds.insert(kind_of(f.message));
        EXPECT_EQ(to_hex(encode_message(f.message)), f.hex) << name;
        auto back = decode_message(encode_message(f.message));
        ASSERT_TRUE(back.ok()) << name << ": " << back.error().message;
        EXPECT_EQ(*back, f.message) << name;
    }
    EXPECT_EQ(kinds.size(), 8u) << "every kind is pinned";
}

TEST(ClusterMessages, EveryKindRoundTrips) {
    EXPECT_EQ(samples().size(), 8u) << "one sample per kind";
    EXPECT_STREQ(message_kind_name(MessageKind::kLeave), "leave");
    EXPECT_STREQ(message_kind_name(MessageKind::kLeaveAck), "leave-ack");
    for (const auto& m : samples()) {
        auto back = decode_message(encode_message(m));
        ASSERT_TRUE(back.ok()) << message_kind_name(kind_of(m)) << ": " << back.error().message;
        EXPECT_EQ(*back, m) << message_kind_name(kind_of(m));
    }
}

TEST(ClusterMessages, EveryTruncationAndTrailingByteIsRejected) {
    for (const auto& m : samples()) {
        const std::string bytes = encode_message(m);
        for (size_t n = 0; n < bytes.size(); ++n) {
            auto r = decode_message(std::string_view(bytes.data(), n));
            ASSERT_FALSE(r.ok()) << message_kind_name(kind_of(m)) << " cut to " << n << " bytes";
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
    const size_t count_at = 3 + 1 + 1 + header_of(a).from_address.size() + 1;
    std::string huge = bytes.substr(0, count_at) + std::string("\xff\xff\xff\xff\x0f", 5) +
                       bytes.substr(count_at + 1);
    auto r = decode_message(huge);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);

    // A version vector out of order (replica 12 before 3).
    Message m = samples()[5];
    std::get<Pull>(m).states = {{"s", SessionState::Kind::kLive, vv({{3, 9}, {12, 1}})}};
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

namespace assistd::cluster {
namespace {

TEST(RateUsageFrames, RoundTripAndRefuseWhatIsMalformed) {
    RateUsage a;
    a.key[0] = 1;
    a.key[31] = 2;
    a.requests = 1;
    a.tokens = 230;
    RateUsage b = a;
    b.requests = 0;
    b.tokens = -150.5;
    const std::string frame = RateUsageLink::encode(0x1234, 7, {a, b});
    ASSERT_TRUE(RateUsageLink::is_rate_frame(frame));
    const auto d = RateUsageLink::decode(frame);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->from, NodeId{0x1234});
    ASSERT_EQ(d->usage.size(), 2u);
    EXPECT_EQ(d->usage[0].key, a.key);
    EXPECT_EQ(d->usage[0].tokens, 230);
    EXPECT_EQ(d->usage[1].tokens, -150.5);

    EXPECT_FALSE(RateUsageLink::decode(frame.substr(0, frame.size() - 1))) << "truncated";
    EXPECT_FALSE(RateUsageLink::decode(RateUsageLink::encode(1, 1, {}))) << "no entries";
    EXPECT_FALSE(RateUsageLink::decode("")) << "empty";
    std::string wrong = frame;
    wrong[0] = 'x';
    EXPECT_FALSE(RateUsageLink::decode(wrong)) << "another frame kind";
    RateUsage nan = a;
    nan.tokens = std::nan("");
    EXPECT_FALSE(RateUsageLink::decode(RateUsageLink::encode(1, 1, {nan}))) << "not a number";
    RateUsage huge = a;
    huge.requests = 1e300;
    EXPECT_FALSE(RateUsageLink::decode(RateUsageLink::encode(1, 1, {huge}))) << "absurd";
}

}  // namespace
}  // namespace assistd::cluster
