#include "knowledge/position.h"

#include <cstdint>

namespace assistd::knowledge {

std::optional<uint64_t> parse_lsn(std::string_view text) {
    const size_t slash = text.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash > 8 || text.size() - slash - 1 == 0 ||
        text.size() - slash - 1 > 8)
        return std::nullopt;
    uint64_t hi = 0, lo = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        if (i == slash) continue;
        const char c = text[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return std::nullopt;
        uint64_t& part = i < slash ? hi : lo;
        part = part * 16 + static_cast<uint64_t>(d);
    }
    return (hi << 32) | lo;
}

std::optional<bool> position_reached(std::string_view have, std::string_view want) {
    const auto a = parse_lsn(have), b = parse_lsn(want);
    if (a && b) return *a >= *b;
    if (a || b) return std::nullopt;
    if (have == want) return true;
    return std::nullopt;
}

}  // namespace assistd::knowledge
