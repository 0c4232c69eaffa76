#pragma once
// A version vector: for each replica, the lamport of the last of its
// operations this replica has applied. Replicas apply each author's changes in
// order, so an id (lamport, replica) has been seen iff lamport <= vv[replica].
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "state/crdt/types.h"

namespace assistd::state::crdt {

class VersionVector {
public:
    uint64_t get(ReplicaId replica) const;
    void set(ReplicaId replica, uint64_t lamport);
    bool includes(const OpId& id) const { return id.lamport <= get(id.replica); }
    // Every entry of *this is >= other's.
    bool dominates(const VersionVector& other) const;
    void merge(const VersionVector& other);        // element-wise max
    void intersect(const VersionVector& other);    // element-wise min
    const std::vector<std::pair<ReplicaId, uint64_t>>& entries() const { return entries_; }
    bool empty() const { return entries_.empty(); }
    std::string to_string() const;

    friend bool operator==(const VersionVector&, const VersionVector&) = default;

private:
    std::vector<std::pair<ReplicaId, uint64_t>> entries_;  // sorted by replica, no zeros
};

}  // namespace assistd::state::crdt
