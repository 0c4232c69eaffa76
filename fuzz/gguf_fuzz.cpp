// GGUF header parser on arbitrary bytes: must return an error, never crash,
// hang or read out of bounds; a parsed file's tensors must lie inside it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "engine/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto file = assistd::engine::GgufFile::parse(std::span<const uint8_t>(data, size), "fuzz");
    if (!file.ok()) return 0;
    for (const auto& t : (*file)->tensors()) {
        if (!t.data) continue;
        const auto* p = static_cast<const uint8_t*>(t.data);
        if (p < data || p + t.n_bytes > data + size) std::abort();
        volatile uint8_t sink = t.n_bytes ? p[t.n_bytes - 1] : 0;
        (void)sink;
    }
    return 0;
}
