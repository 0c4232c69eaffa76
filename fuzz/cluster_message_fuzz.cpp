// libFuzzer: the cluster frame decoder, which reads every frame a peer sends.
// Hostile bytes are kCorrupt or kUnsupported, never a crash. A frame that
// decodes holds only what its kind carries, and re-encodes to the canonical
// frame: no longer than the input (varints may have been padded), decoding to
// the same message, and rejected when cut short by a byte or followed by one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cluster/messages.h"

using namespace assistd;
using cluster::Message;
using cluster::MessageKind;
using cluster::SessionState;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

bool states_well_formed(const std::vector<SessionState>& states) {
    for (const SessionState& s : states)
        if (s.kind != SessionState::Kind::kLive && !s.version.empty()) return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto decoded = cluster::decode_message(bytes);
    if (!decoded.ok()) {
        const ErrorCode code = decoded.error().code;
        check(code == ErrorCode::kCorrupt || code == ErrorCode::kUnsupported);
        check(!decoded.error().message.empty());
        return 0;
    }
    const Message& m = *decoded;
    check(m.from != 0);
    const bool has_states = m.kind == MessageKind::kAck || m.kind == MessageKind::kPull ||
                            m.kind == MessageKind::kDigest || m.kind == MessageKind::kSummary;
    const bool has_buckets = m.kind == MessageKind::kDigest || m.kind == MessageKind::kSummary;
    check(m.kind == MessageKind::kDeltas || m.deltas.empty());
    check(has_states || m.states.empty());
    check(has_buckets || m.buckets.empty());
    check(m.kind == MessageKind::kSummary || m.replies.empty());
    check(states_well_formed(m.states) && states_well_formed(m.replies));

    const std::string canonical = cluster::encode_message(m);
    check(canonical.size() <= bytes.size());
    auto again = cluster::decode_message(canonical);
    check(again.ok() && *again == m);
    check(cluster::encode_message(*again) == canonical);
    // All or nothing: one byte short or one byte too many is no message.
    check(
        !cluster::decode_message(std::string_view(canonical).substr(0, canonical.size() - 1)).ok());
    check(!cluster::decode_message(canonical + '\0').ok());
    return 0;
}
