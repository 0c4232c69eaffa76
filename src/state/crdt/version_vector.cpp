#include "state/crdt/version_vector.h"

#include <algorithm>

namespace assistd::state::crdt {

const char* obj_type_name(ObjType type) {
    switch (type) {
        case ObjType::kMap: return "map";
        case ObjType::kList: return "list";
        case ObjType::kText: return "text";
        case ObjType::kCounter: return "counter";
        case ObjType::kRegister: return "register";
    }
    return "?";
}

uint64_t VersionVector::get(ReplicaId replica) const {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), replica,
                               [](const auto& e, ReplicaId r) { return e.first < r; });
    return it != entries_.end() && it->first == replica ? it->second : 0;
}

void VersionVector::set(ReplicaId replica, uint64_t lamport) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), replica,
                               [](const auto& e, ReplicaId r) { return e.first < r; });
    if (it != entries_.end() && it->first == replica) {
        if (lamport == 0) entries_.erase(it);
        else it->second = lamport;
    } else if (lamport != 0) {
        entries_.insert(it, {replica, lamport});
    }
}

bool VersionVector::dominates(const VersionVector& other) const {
    for (const auto& [r, l] : other.entries_) {
        if (get(r) < l) return false;
    }
    return true;
}

void VersionVector::merge(const VersionVector& other) {
    for (const auto& [r, l] : other.entries_) {
        if (get(r) < l) set(r, l);
    }
}

void VersionVector::intersect(const VersionVector& other) {
    std::vector<std::pair<ReplicaId, uint64_t>> out;
    for (const auto& [r, l] : entries_) {
        const uint64_t m = std::min(l, other.get(r));
        if (m != 0) out.emplace_back(r, m);
    }
    entries_ = std::move(out);
}

std::string VersionVector::to_string() const {
    std::string s = "{";
    for (const auto& [r, l] : entries_) {
        if (s.size() > 1) s += ", ";
        s += std::to_string(r) + ":" + std::to_string(l);
    }
    return s + "}";
}

}  // namespace assistd::state::crdt
