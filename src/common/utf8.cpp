#include "common/utf8.h"

namespace assistd {

DecodedCodePoint decode_utf8(std::string_view s, size_t pos) {
    DecodedCodePoint result;
    const auto lead = static_cast<uint8_t>(s[pos]);
    result.code_point = lead;
    if (lead < 0x80) {
        result.valid = true;
        return result;
    }
    uint32_t length = 0;
    uint32_t cp = 0;
    uint32_t min_value = 0;
    if ((lead & 0xE0) == 0xC0) {
        length = 2; cp = lead & 0x1F; min_value = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
        length = 3; cp = lead & 0x0F; min_value = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
        length = 4; cp = lead & 0x07; min_value = 0x10000;
    } else {
        return result;  // continuation byte or 0xF8..0xFF as a lead
    }
    if (pos + length > s.size()) return result;
    for (uint32_t i = 1; i < length; ++i) {
        const auto byte = static_cast<uint8_t>(s[pos + i]);
        if ((byte & 0xC0) != 0x80) return result;
        cp = (cp << 6) | (byte & 0x3F);
    }
    if (cp < min_value || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return result;
    result.code_point = cp;
    result.length = length;
    result.valid = true;
    return result;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

}  // namespace assistd
