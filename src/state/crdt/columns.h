#pragma once
// Document format version 2: a document's changes packed column by column
// (every op kind together, every origin together, all inserted text together,
// ids as small deltas from the op's own id) and the whole deflated, as
// Automerge's and Loro's binary formats do. Columns of like values compress
// far better than changes laid end to end (format version 1).
//
// The columns only repack changes: decoding rebuilds each change, and the
// caller still passes it through the version-1 change decoder, so the two
// formats accept exactly the same changes.
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "state/crdt/change.h"

namespace assistd::state::crdt {

inline constexpr uint8_t kColumnsFormatVersion = 2;

// Magic, version 2, then the packed changes (in the order given).
std::string encode_document_columns(const std::vector<Change>& changes);
// `bytes` is a whole encoded document of version 2.
Result<std::vector<Change>> decode_document_columns(std::string_view bytes);

}  // namespace assistd::state::crdt
