// libFuzzer: the cluster frame decoder, which reads every frame a peer sends.
// Hostile bytes are kCorrupt or kUnsupported, never a crash. A frame that
// decodes names its sender, its kind is the alternative it holds (typed
// messages carry only their kind's fields), and it re-encodes to the canonical
// frame: no longer than the input (varints may have been padded), decoding to
// the same message, and rejected when cut short by a byte or followed by one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

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
    check(cluster::header_of(m).from != 0);
    const MessageKind kind = cluster::kind_of(m);
    std::visit([&](const auto& typed) { check(std::decay_t<decltype(typed)>::kKind == kind); }, m);
    if (const auto* a = std::get_if<cluster::Ack>(&m)) check(states_well_formed(a->states));
    if (const auto* p = std::get_if<cluster::Pull>(&m)) check(states_well_formed(p->states));
    if (const auto* d = std::get_if<cluster::Digest>(&m)) check(states_well_formed(d->offers));
    if (const auto* s = std::get_if<cluster::Summary>(&m))
        check(states_well_formed(s->states) && states_well_formed(s->replies));

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
