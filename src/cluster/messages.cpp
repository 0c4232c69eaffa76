#include "cluster/messages.h"

#include <type_traits>

#include "state/crdt/encoding.h"

namespace assistd::cluster {
namespace {

constexpr uint8_t kMagic = 0xC5;
constexpr uint8_t kVersion = 1;
constexpr uint64_t kMaxBuckets = 1 << 16;

using state::crdt::Reader;
using state::crdt::Writer;

void write_state(Writer& w, const SessionState& s) {
    w.bytes(s.session_id);
    w.u8(static_cast<uint8_t>(s.kind));
    const auto& entries = s.version.entries();
    w.varint(entries.size());
    for (const auto& [replica, lamport] : entries) {
        w.varint(replica);
        w.varint(lamport);
    }
}

void write_states(Writer& w, const std::vector<SessionState>& states) {
    w.varint(states.size());
    for (const auto& s : states) write_state(w, s);
}

Error corrupt(const std::string& what) {
    return make_error(ErrorCode::kCorrupt, "cluster message: " + what);
}

bool read_state(Reader& r, SessionState& s) {
    std::string_view id;
    uint8_t kind;
    uint64_t n;
    if (!r.bytes(id) || !r.u8(kind) || kind > 2 || !r.varint(n) || n > r.remaining() / 2)
        return false;
    s.session_id.assign(id);
    s.kind = static_cast<SessionState::Kind>(kind);
    uint64_t last = 0;
    for (uint64_t i = 0; i < n; ++i) {
        uint64_t replica, lamport;
        if (!r.varint(replica) || !r.varint(lamport)) return false;
        // Canonical: sorted by replica, no zero entries (what VersionVector keeps).
        if (replica == 0 || lamport == 0 || (i > 0 && replica <= last)) return false;
        last = replica;
        s.version.set(replica, lamport);
    }
    return s.kind == SessionState::Kind::kLive || n == 0;
}

bool read_states(Reader& r, std::vector<SessionState>& out) {
    uint64_t n;
    if (!r.varint(n) || n > r.remaining() / 3) return false;  // each state takes at least 3 bytes
    out.resize(n);
    for (auto& s : out) {
        if (!read_state(r, s)) return false;
    }
    return true;
}

}  // namespace

const char* message_kind_name(MessageKind kind) {
    switch (kind) {
        case MessageKind::kHeartbeat:
            return "heartbeat";
        case MessageKind::kDeltas:
            return "deltas";
        case MessageKind::kAck:
            return "ack";
        case MessageKind::kDigest:
            return "digest";
        case MessageKind::kSummary:
            return "summary";
        case MessageKind::kPull:
            return "pull";
        case MessageKind::kLeave:
            return "leave";
        case MessageKind::kLeaveAck:
            return "leave-ack";
    }
    return "unknown";
}

MessageKind kind_of(const Message& message) {
    return std::visit([](const auto& m) { return std::decay_t<decltype(m)>::kKind; }, message);
}

const MessageHeader& header_of(const Message& message) {
    return std::visit([](const auto& m) -> const MessageHeader& { return m; }, message);
}

MessageHeader& header_of(Message& message) {
    return std::visit([](auto& m) -> MessageHeader& { return m; }, message);
}

namespace {

// The body after the header, one overload per kind (heartbeat, leave and leave-ack have none).
void write_body(Writer&, const MessageHeader&) {}

void write_body(Writer& w, const Deltas& m) {
    w.varint(m.items.size());
    for (const auto& d : m.items) {
        w.bytes(d.session_id);
        w.bytes(d.delta);
    }
}

void write_body(Writer& w, const Ack& m) {
    write_states(w, m.states);
}

void write_body(Writer& w, const Pull& m) {
    write_states(w, m.states);
}

void write_buckets(Writer& w, const std::vector<uint64_t>& buckets) {
    w.varint(buckets.size());
    for (uint64_t b : buckets) w.varint(b);
}

void write_body(Writer& w, const Digest& m) {
    write_buckets(w, m.buckets);
    write_states(w, m.offers);
}

void write_body(Writer& w, const Summary& m) {
    write_buckets(w, m.buckets);
    write_states(w, m.states);
    write_states(w, m.replies);
}

bool read_body(Reader&, MessageHeader&) {
    return true;
}

bool read_body(Reader& r, Deltas& m) {
    uint64_t n;
    if (!r.varint(n) || n > r.remaining() / 2) return false;
    m.items.resize(n);
    for (auto& d : m.items) {
        std::string_view id, delta;
        if (!r.bytes(id) || !r.bytes(delta)) return false;
        d.session_id.assign(id);
        d.delta.assign(delta);
    }
    return true;
}

bool read_body(Reader& r, Ack& m) {
    return read_states(r, m.states);
}

bool read_body(Reader& r, Pull& m) {
    return read_states(r, m.states);
}

bool read_buckets(Reader& r, std::vector<uint64_t>& buckets) {
    uint64_t n;
    if (!r.varint(n) || n > kMaxBuckets || n > r.remaining()) return false;
    buckets.resize(n);
    for (auto& b : buckets) {
        if (!r.varint(b)) return false;
    }
    return true;
}

bool read_body(Reader& r, Digest& m) {
    return read_buckets(r, m.buckets) && read_states(r, m.offers);
}

bool read_body(Reader& r, Summary& m) {
    return read_buckets(r, m.buckets) && read_states(r, m.states) && read_states(r, m.replies);
}

// An empty message of the kind the wire byte names (1..8, checked by the caller).
Message empty_message(MessageKind kind) {
    switch (kind) {
        case MessageKind::kHeartbeat:
            return Heartbeat{};
        case MessageKind::kDeltas:
            return Deltas{};
        case MessageKind::kAck:
            return Ack{};
        case MessageKind::kDigest:
            return Digest{};
        case MessageKind::kSummary:
            return Summary{};
        case MessageKind::kPull:
            return Pull{};
        case MessageKind::kLeave:
            return Leave{};
        case MessageKind::kLeaveAck:
            return LeaveAck{};
    }
    return Heartbeat{};
}

}  // namespace

std::string encode_message(const Message& message) {
    Writer w;
    const MessageHeader& h = header_of(message);
    w.u8(kMagic);
    w.u8(kVersion);
    w.u8(static_cast<uint8_t>(kind_of(message)));
    w.varint(h.from);
    w.bytes(h.from_address);
    w.varint(h.id);
    std::visit([&w](const auto& m) { write_body(w, m); }, message);
    return w.take();
}

Result<Message> decode_message(std::string_view bytes) {
    Reader r(bytes);
    uint8_t magic, version, kind;
    if (!r.u8(magic) || magic != kMagic) return corrupt("not a cluster frame (bad magic byte)");
    if (!r.u8(version)) return corrupt("truncated header");
    if (version != kVersion) {
        return make_error(ErrorCode::kUnsupported,
                          "cluster message: version " + std::to_string(version) +
                              " is not supported (this build speaks 1); upgrade the older node");
    }
    if (!r.u8(kind) || kind < 1 || kind > 8) return corrupt("unknown message kind");
    Message m = empty_message(static_cast<MessageKind>(kind));
    MessageHeader& h = header_of(m);
    std::string_view addr;
    if (!r.varint(h.from) || h.from == 0 || !r.bytes(addr) || !r.varint(h.id))
        return corrupt("truncated header");
    h.from_address.assign(addr);
    if (!std::visit([&r](auto& body) { return read_body(r, body); }, m))
        return corrupt(std::string("malformed ") + message_kind_name(kind_of(m)) + " body");
    if (!r.done()) return corrupt("trailing bytes after the message");
    return m;
}

}  // namespace assistd::cluster
