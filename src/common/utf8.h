#pragma once
// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF),
// shared by the tokenizers and the CRDT text encoding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace assistd {

struct DecodedCodePoint {
    uint32_t code_point = 0;
    uint32_t length = 1;  // bytes consumed (1 for an invalid byte)
    bool valid = false;
};

// Decodes the sequence starting at s[pos] (pos < s.size()).
DecodedCodePoint decode_utf8(std::string_view s, size_t pos);
void append_utf8(std::string& out, uint32_t code_point);

}  // namespace assistd
