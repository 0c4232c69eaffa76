#include "state/crdt/encoding.h"

#include "common/utf8.h"

namespace assistd::state::crdt {

bool utf8_decode(std::string_view in, std::u32string& out) {
    for (size_t i = 0; i < in.size();) {
        const DecodedCodePoint c = decode_utf8(in, i);
        if (!c.valid) return false;
        out.push_back(c.code_point);
        i += c.length;
    }
    return true;
}

void utf8_append(std::string& out, char32_t cp) { append_utf8(out, static_cast<uint32_t>(cp)); }

}  // namespace assistd::state::crdt
