#pragma once
// Source positions as the graph stores them (opaque text per source), and
// whether one has reached another: PostgreSQL LSNs ("16/B374D848") compare
// as numbers; any other form only by equality (MariaDB GTIDs will compare
// per domain when that source exists).
#include <cstdint>
#include <optional>
#include <string_view>

namespace assistd::knowledge {

// A PostgreSQL LSN, "16/B374D848" (hex/hex, 1 to 8 digits each); nullopt otherwise.
std::optional<uint64_t> parse_lsn(std::string_view text);

// nullopt: the two cannot be compared (different or unknown forms).
std::optional<bool> position_reached(std::string_view have, std::string_view want);

}  // namespace assistd::knowledge
