#pragma once
// What replicas say to each other, and its binary encoding (varints and
// length-prefixed strings, like the CRDT's). One frame is one message; the
// transport moves frames and knows nothing of their content.
//
//   frame    = 0xC5, version 1, kind, from node id, from address, id, body
//   Heartbeat: nothing more
//   Deltas   : id = batch number; items (session, delta) -- an empty delta
//              means "I do not hold this session" (an answer to a pull)
//   Ack      : id = the batch acknowledged; states after applying it
//   Digest   : id = round; bucket hashes; offers (states of sessions the
//              sender holds but no longer owns: a hand-off)
//   Summary  : id = round; the differing bucket numbers; the receiver's
//              states in those buckets; its states for the offered sessions
//   Pull     : id = 0 or kPullAnswerEvenIfCurrent; the puller's states;
//              "send me what these lack"
//   Leave    : id = the sender's incarnation; "I have handed everything
//              over and am going away": take me out of placement now
//   LeaveAck : id = the incarnation whose leave the receiver noted
//   (a heartbeat's id is the sender's incarnation: a higher one than a
//   leave named means the node came back)
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cluster/node_identity.h"
#include "common/result.h"
#include "state/crdt/version_vector.h"

namespace assistd::cluster {

enum class MessageKind : uint8_t {
    kHeartbeat = 1,
    kDeltas = 2,
    kAck = 3,
    kDigest = 4,
    kSummary = 5,
    kPull = 6,
    kLeave = 7,
    kLeaveAck = 8
};
const char* message_kind_name(MessageKind kind);

// What one node holds of one session.
struct SessionState {
    enum class Kind : uint8_t { kMissing = 0, kLive = 1, kDeleted = 2 };
    std::string session_id;
    Kind kind = Kind::kMissing;
    state::crdt::VersionVector version;  // kLive only
    friend bool operator==(const SessionState&, const SessionState&) = default;
};

struct DeltaItem {
    std::string session_id;
    std::string delta;  // SessionStore::changes_since output; empty: not held by the sender
    friend bool operator==(const DeltaItem&, const DeltaItem&) = default;
};

// What every frame starts with. `id` means what its kind says (above).
struct MessageHeader {
    NodeId from = 0;
    std::string from_address;
    uint64_t id = 0;
    friend bool operator==(const MessageHeader&, const MessageHeader&) = default;
};

// A pull with this id asks for the peer's states as an answer besides what
// is missing (a refresh counts answers); id 0 gets only what is missing.
constexpr uint64_t kPullAnswerEvenIfCurrent = 1;

// One struct per kind: a handler sees the fields its kind has and no other.
struct Heartbeat : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kHeartbeat;
    friend bool operator==(const Heartbeat&, const Heartbeat&) = default;
};
struct Deltas : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kDeltas;
    std::vector<DeltaItem> items;
    friend bool operator==(const Deltas&, const Deltas&) = default;
};
struct Ack : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kAck;
    std::vector<SessionState> states;
    friend bool operator==(const Ack&, const Ack&) = default;
};
struct Digest : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kDigest;
    std::vector<uint64_t> buckets;     // one hash per bucket
    std::vector<SessionState> offers;  // sessions handed off to the receiver
    friend bool operator==(const Digest&, const Digest&) = default;
};
struct Summary : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kSummary;
    std::vector<uint64_t> buckets;      // the numbers of the buckets that differ
    std::vector<SessionState> states;   // the receiver's states in those buckets
    std::vector<SessionState> replies;  // its states of the offered sessions
    friend bool operator==(const Summary&, const Summary&) = default;
};
struct Pull : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kPull;
    std::vector<SessionState> states;  // the puller's
    friend bool operator==(const Pull&, const Pull&) = default;
};
struct Leave : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kLeave;
    friend bool operator==(const Leave&, const Leave&) = default;
};
struct LeaveAck : MessageHeader {
    static constexpr MessageKind kKind = MessageKind::kLeaveAck;
    friend bool operator==(const LeaveAck&, const LeaveAck&) = default;
};

using Message = std::variant<Heartbeat, Deltas, Ack, Digest, Summary, Pull, Leave, LeaveAck>;

MessageKind kind_of(const Message& message);
const MessageHeader& header_of(const Message& message);
MessageHeader& header_of(Message& message);

std::string encode_message(const Message& message);
// All or nothing: a frame that is short, long, of an unknown kind or version,
// or has absurd counts is rejected with kCorrupt / kUnsupported.
Result<Message> decode_message(std::string_view bytes);

}  // namespace assistd::cluster
