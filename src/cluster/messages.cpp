#include "cluster/messages.h"

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

size_t delta_bytes(const std::vector<DeltaItem>& items) {
    size_t n = 0;
    for (const auto& d : items) n += d.session_id.size() + d.delta.size() + 8;
    return n;
}

std::string encode_message(const Message& m) {
    Writer w;
    w.u8(kMagic);
    w.u8(kVersion);
    w.u8(static_cast<uint8_t>(m.kind));
    w.varint(m.from);
    w.bytes(m.from_address);
    w.varint(m.id);
    switch (m.kind) {
        case MessageKind::kHeartbeat:
        case MessageKind::kLeave:
        case MessageKind::kLeaveAck:
            break;
        case MessageKind::kDeltas:
            w.varint(m.deltas.size());
            for (const auto& d : m.deltas) {
                w.bytes(d.session_id);
                w.bytes(d.delta);
            }
            break;
        case MessageKind::kAck:
        case MessageKind::kPull:
            write_states(w, m.states);
            break;
        case MessageKind::kDigest:
        case MessageKind::kSummary:
            w.varint(m.buckets.size());
            for (uint64_t b : m.buckets) w.varint(b);
            write_states(w, m.states);
            if (m.kind == MessageKind::kSummary) write_states(w, m.replies);
            break;
    }
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
    Message m;
    m.kind = static_cast<MessageKind>(kind);
    std::string_view addr;
    if (!r.varint(m.from) || m.from == 0 || !r.bytes(addr) || !r.varint(m.id))
        return corrupt("truncated header");
    m.from_address.assign(addr);
    bool ok = true;
    switch (m.kind) {
        case MessageKind::kHeartbeat:
        case MessageKind::kLeave:
        case MessageKind::kLeaveAck:
            break;
        case MessageKind::kDeltas: {
            uint64_t n;
            ok = r.varint(n) && n <= r.remaining() / 2;
            if (!ok) break;
            m.deltas.resize(n);
            for (auto& d : m.deltas) {
                std::string_view id, delta;
                if (!r.bytes(id) || !r.bytes(delta)) {
                    ok = false;
                    break;
                }
                d.session_id.assign(id);
                d.delta.assign(delta);
            }
            break;
        }
        case MessageKind::kAck:
        case MessageKind::kPull:
            ok = read_states(r, m.states);
            break;
        case MessageKind::kDigest:
        case MessageKind::kSummary: {
            uint64_t n;
            ok = r.varint(n) && n <= kMaxBuckets && n <= r.remaining();
            if (!ok) break;
            m.buckets.resize(n);
            for (auto& b : m.buckets) {
                if (!r.varint(b)) {
                    ok = false;
                    break;
                }
            }
            ok = ok && read_states(r, m.states);
            if (ok && m.kind == MessageKind::kSummary) ok = read_states(r, m.replies);
            break;
        }
    }
    if (!ok) return corrupt(std::string("malformed ") + message_kind_name(m.kind) + " body");
    if (!r.done()) return corrupt("trailing bytes after the message");
    return m;
}

}  // namespace assistd::cluster
