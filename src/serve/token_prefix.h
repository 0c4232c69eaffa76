#pragma once
// How many leading tokens two token runs share: the prefix cache and its disk
// tier match prompts by it.
#include <algorithm>
#include <cstddef>
#include <span>

#include "engine/tokenizer.h"

namespace assistd::serve {

inline size_t common_prefix(std::span<const engine::TokenId> a, std::span<const engine::TokenId> b) {
    const size_t n = std::min(a.size(), b.size());
    return static_cast<size_t>(std::mismatch(a.begin(), a.begin() + static_cast<std::ptrdiff_t>(n), b.begin()).first -
                               a.begin());
}

}  // namespace assistd::serve
