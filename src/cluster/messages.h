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
//   Pull     : the puller's states; "send me what these lack"
//   Leave    : id = the sender's incarnation; "I have handed everything
//              over and am going away": take me out of placement now
//   LeaveAck : id = the incarnation whose leave the receiver noted
//   (a heartbeat's id is the sender's incarnation: a higher one than a
//   leave named means the node came back)
#include <cstdint>
#include <string>
#include <string_view>
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

struct Message {
    MessageKind kind = MessageKind::kHeartbeat;
    NodeId from = 0;
    std::string from_address;
    uint64_t id = 0;
    std::vector<DeltaItem> deltas;      // kDeltas
    std::vector<SessionState> states;   // kAck, kDigest (offers), kSummary (details), kPull
    std::vector<uint64_t> buckets;      // kDigest: hashes; kSummary: differing bucket numbers
    std::vector<SessionState> replies;  // kSummary: the receiver's states of the offered sessions
    friend bool operator==(const Message&, const Message&) = default;
};

std::string encode_message(const Message& message);
// All or nothing: a frame that is short, long, of an unknown kind or version,
// or has absurd counts is rejected with kCorrupt / kUnsupported.
Result<Message> decode_message(std::string_view bytes);

// Approximate size in bytes, for back-pressure accounting.
size_t delta_bytes(const std::vector<DeltaItem>& items);

}  // namespace assistd::cluster
