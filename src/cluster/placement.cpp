#include "cluster/placement.h"

#include <algorithm>

#include "common/random.h"

namespace assistd::cluster {

uint64_t stable_hash(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    return splitmix64(h);
}

std::vector<NodeId> place_replicas(std::string_view session_id, const std::vector<NodeId>& members,
                                   int factor) {
    const uint64_t key = stable_hash(session_id);
    std::vector<std::pair<uint64_t, NodeId>> scored;
    scored.reserve(members.size());
    for (NodeId node : members) {
        uint64_t state = key ^ (node * 0x9e3779b97f4a7c15ull);
        scored.emplace_back(splitmix64(state), node);
    }
    const size_t n = std::min(scored.size(), static_cast<size_t>(std::max(factor, 1)));
    std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(n), scored.end(),
                      [](const auto& a, const auto& b) {
                          return a.first != b.first ? a.first > b.first : a.second < b.second;
                      });
    std::vector<NodeId> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.push_back(scored[i].second);
    return out;
}

}  // namespace assistd::cluster
