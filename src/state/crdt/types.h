#pragma once
// Identifiers and values of the JSON CRDT. Every operation has an id
// (lamport, replica); ids order totally by lamport first, replica second, and
// an operation's lamport is larger than that of every operation its author had
// seen, so "greater id" never means "happened before".
#include <cstdint>
#include <functional>
#include <string>

namespace assistd::state::crdt {

using ReplicaId = uint64_t;

struct OpId {
    uint64_t lamport = 0;
    ReplicaId replica = 0;

    friend bool operator==(const OpId&, const OpId&) = default;
    friend bool operator<(const OpId& a, const OpId& b) {
        return a.lamport != b.lamport ? a.lamport < b.lamport : a.replica < b.replica;
    }
    friend bool operator>(const OpId& a, const OpId& b) { return b < a; }
    bool is_null() const { return lamport == 0; }
};

struct OpIdHash {
    size_t operator()(const OpId& id) const {
        return std::hash<uint64_t>()(id.lamport * 0x9E3779B97F4A7C15ull ^ id.replica);
    }
};

// A container is named by the id of the operation that created it; the root
// map has the null id.
using ObjId = OpId;
inline constexpr ObjId kRootObj{};

enum class ObjType : uint8_t { kMap = 1, kList = 2, kText = 3, kCounter = 4, kRegister = 5 };
const char* obj_type_name(ObjType type);
inline bool valid_obj_type(uint64_t t) { return t >= 1 && t <= 5; }

// A JSON leaf, or a reference to a nested container.
struct Value {
    enum class Kind : uint8_t { kNull = 0, kBool = 1, kInt = 2, kDouble = 3, kString = 4, kObject = 5 };
    Kind kind = Kind::kNull;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    std::string s;
    ObjId obj;  // kObject
    ObjType type = ObjType::kMap;

    static Value null() { return Value{}; }
    static Value boolean(bool v) { Value x; x.kind = Kind::kBool; x.b = v; return x; }
    static Value integer(int64_t v) { Value x; x.kind = Kind::kInt; x.i = v; return x; }
    static Value real(double v) { Value x; x.kind = Kind::kDouble; x.d = v; return x; }
    static Value string(std::string v) { Value x; x.kind = Kind::kString; x.s = std::move(v); return x; }
    static Value object(ObjId id, ObjType t) { Value x; x.kind = Kind::kObject; x.obj = id; x.type = t; return x; }

    bool is_object() const { return kind == Kind::kObject; }
    friend bool operator==(const Value&, const Value&) = default;
};

}  // namespace assistd::state::crdt
