#pragma once
// Replica placement by rendezvous (highest random weight) hashing: every node
// scores each session id, the R highest scores hold it. Every node computes
// the same set from the same members, without coordination, and a member
// joining or leaving moves only the sessions whose top R it enters or leaves.
#include <cstdint>
#include <string_view>
#include <vector>

#include "cluster/node_identity.h"

namespace assistd::cluster {

// FNV-1a, then a final mix: the same value on every platform and build.
uint64_t stable_hash(std::string_view bytes);

// The replicas of `session_id` among `members` (node ids, any order, no
// duplicates), best first; all members when there are fewer than `factor`.
std::vector<NodeId> place_replicas(std::string_view session_id, const std::vector<NodeId>& members,
                                   int factor);

}  // namespace assistd::cluster
