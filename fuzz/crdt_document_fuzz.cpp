// libFuzzer: the document decoder. Corrupt or hostile bytes are an error,
// never a crash; a document that decodes re-encodes to bytes that decode to
// the same state.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "state/crdt/document.h"

using assistd::state::crdt::Document;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    auto doc = Document::decode(bytes, 9);
    if (!doc.ok()) return 0;
    (void)doc->to_json();
    const std::string state = doc->encode_state();
    auto again = Document::decode(doc->encode(), 9);
    if (!again.ok() || again->encode_state() != state) __builtin_trap();
    return 0;
}
