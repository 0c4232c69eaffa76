// libFuzzer: the delta decoder and apply path. Any bytes must either be
// rejected with an error or applied without crashing, and a document that
// accepted them must still encode, decode and answer reads.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "state/crdt/document.h"

using assistd::state::crdt::Document;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    // Against an empty document and against one with content to reference.
    Document empty(3);
    (void)empty.apply(bytes);
    (void)empty.to_json();
    Document doc(3);
    auto t = doc.map_set_object(doc.root(), "t", assistd::state::crdt::ObjType::kText);
    if (t.ok()) (void)doc.text_insert(*t, 0, "hello");
    (void)doc.apply(bytes);
    (void)doc.to_json();
    (void)doc.encode_state();
    auto copy = Document::decode(doc.encode(), 4);
    if (!copy.ok()) __builtin_trap();  // what we encode we must decode
    doc.compact(doc.stable_version({3}));
    return 0;
}
