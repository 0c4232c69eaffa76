#include "state/crdt/document.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>

#include "state/crdt/columns.h"

namespace assistd::state::crdt {
namespace {

constexpr size_t kMaxPendingChanges = 1 << 16;

Error not_a(ObjId id, ObjType want) {
    return make_error(ErrorCode::kInvalidArgument, "crdt: object " + std::to_string(id.lamport) + "@" +
                                                       std::to_string(id.replica) + " is not a " +
                                                       obj_type_name(want) + " of this document");
}

Error corrupt(const std::string& what) { return make_error(ErrorCode::kCorrupt, "crdt: corrupt encoding: " + what); }

void json_string(std::string& out, std::string_view s) {
    out.push_back('"');
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out.push_back(ch);
                }
        }
    }
    out.push_back('"');
}

}  // namespace

Document::Document(ReplicaId replica) : replica_(replica) {
    auto root = std::make_unique<Object>();
    root->type = ObjType::kMap;
    objects_.emplace(kRootObj, std::move(root));
}
Document::~Document() = default;
Document::Document(Document&&) noexcept = default;
Document& Document::operator=(Document&&) noexcept = default;

const Document::Object* Document::find_any(ObjId id) const {
    auto it = objects_.find(id);
    return it == objects_.end() ? nullptr : it->second.get();
}

Document::Object* Document::find_slow(ObjId id, ObjType type) {
    auto it = objects_.find(id);
    if (it == objects_.end()) return nullptr;
    last_obj_id_ = id;
    last_obj_ = it->second.get();
    return it->second->type != type ? nullptr : it->second.get();
}

const Document::Object* Document::find(ObjId id, ObjType type) const {
    auto it = objects_.find(id);
    return it == objects_.end() || it->second->type != type ? nullptr : it->second.get();
}

void Document::create_object(ObjId id, ObjType type) {
    auto obj = std::make_unique<Object>();
    obj->type = type;
    if (type == ObjType::kList || type == ObjType::kText) obj->seq = std::make_unique<Sequence>(type == ObjType::kText);
    if (last_obj_id_ == id) last_obj_ = nullptr;
    objects_[id] = std::move(obj);
}

Op& Document::begin_local_op(uint64_t width, OpId& id) {
    if (!open_) {
        local_ = Change{};
        local_.replica = replica_;
        local_.prev = vv_.get(replica_);
        local_.start = lamport_ + 1;
        local_.deps = vv_;
        local_.deps.set(replica_, 0);
        open_ = true;
    }
    id = OpId{lamport_ + 1, replica_};
    lamport_ += width;
    vv_.set(replica_, lamport_);
    last_op_lamport_ = id.lamport;
    ++ops_applied_;
    if (local_.ops.empty()) return local_.ops.emplace_back();
    // Only the last op can still grow (typing on): seal the one before into
    // bytes and reuse its slot, text buffer included.
    Op& op = local_.ops.back();
    encode_op(op, local_sealed_);
    ++local_sealed_count_;
    std::u32string text = std::move(op.text);
    text.clear();
    op = Op{};
    op.text = std::move(text);
    return op;
}

void Document::commit() {
    if (!open_) return;
    open_ = false;
    Writer w;
    encode_change_head(local_, local_sealed_count_ + local_.ops.size(), w);
    w.raw(local_sealed_.str());
    for (const Op& op : local_.ops) encode_op(op, w);
    std::string bytes = w.take();
    bytes.shrink_to_fit();  // history keeps it for good
    history_[replica_].push_back(StoredChange{local_.start, lamport_, std::move(bytes)});
    local_ = Change{};
    std::string().swap(local_sealed_.str());  // a moved-from string may keep its buffer
    local_sealed_count_ = 0;
}

// --- maps and registers ---

void Document::apply_map_set(Object& obj, const std::string& key, const Value& v, OpId id,
                             const VersionVector& deps) {
    auto& entries = obj.map[key];
    std::erase_if(entries, [&](const MapEntry& e) { return e.id.replica == id.replica || deps.includes(e.id); });
    auto pos = std::find_if(entries.begin(), entries.end(), [&](const MapEntry& e) { return e.id < id; });
    entries.insert(pos, MapEntry{id, v});
}

void Document::apply_map_delete(Object& obj, const std::string& key, OpId id, const VersionVector& deps) {
    auto it = obj.map.find(key);
    if (it == obj.map.end()) return;
    std::erase_if(it->second, [&](const MapEntry& e) { return e.id.replica == id.replica || deps.includes(e.id); });
    if (it->second.empty()) obj.map.erase(it);
}

Status Document::map_set(ObjId map, std::string_view key, Value scalar) {
    Object* obj = find(map, ObjType::kMap);
    if (!obj) return not_a(map, ObjType::kMap);
    if (scalar.is_object()) return make_error(ErrorCode::kInvalidArgument, "crdt: use map_set_object for containers");
    OpId id;
    Op& op = begin_local_op(1, id);
    op.kind = OpKind::kMapSet;
    op.obj = map;
    op.key.assign(key);
    op.value = std::move(scalar);
    apply_map_set(*obj, op.key, op.value, id, vv_);
    return {};
}

Result<ObjId> Document::map_set_object(ObjId map, std::string_view key, ObjType type) {
    Object* obj = find(map, ObjType::kMap);
    if (!obj) return not_a(map, ObjType::kMap);
    OpId id;
    Op& op = begin_local_op(1, id);
    op.kind = OpKind::kMapSet;
    op.obj = map;
    op.key.assign(key);
    op.value = Value::object(id, type);
    create_object(id, type);
    apply_map_set(*obj, op.key, op.value, id, vv_);
    return id;
}

Status Document::map_delete(ObjId map, std::string_view key) {
    Object* obj = find(map, ObjType::kMap);
    if (!obj) return not_a(map, ObjType::kMap);
    if (obj->map.find(key) == obj->map.end()) return {};
    OpId id;
    Op& op = begin_local_op(1, id);
    op.kind = OpKind::kMapDelete;
    op.obj = map;
    op.key.assign(key);
    apply_map_delete(*obj, op.key, id, vv_);
    return {};
}

Status Document::register_set(ObjId reg, Value scalar) {
    Object* obj = find(reg, ObjType::kRegister);
    if (!obj) return not_a(reg, ObjType::kRegister);
    if (scalar.is_object()) return make_error(ErrorCode::kInvalidArgument, "crdt: registers hold scalars");
    OpId id;
    Op& op = begin_local_op(1, id);
    op.kind = OpKind::kRegisterSet;
    op.obj = reg;
    op.value = std::move(scalar);
    apply_map_set(*obj, std::string(), op.value, id, vv_);
    return {};
}

Status Document::counter_add(ObjId counter, int64_t delta) {
    Object* obj = find(counter, ObjType::kCounter);
    if (!obj) return not_a(counter, ObjType::kCounter);
    OpId id;
    Op& op = begin_local_op(1, id);
    op.kind = OpKind::kCounterAdd;
    op.obj = counter;
    op.delta = delta;
    obj->counter = static_cast<int64_t>(static_cast<uint64_t>(obj->counter) + static_cast<uint64_t>(delta));
    return {};
}

// --- lists and text ---

Status Document::local_insert(ObjId seq_obj, uint64_t pos, std::u32string_view chars, std::vector<Value> values,
                              bool is_text, OpId* first_id) {
    const ObjType type = is_text ? ObjType::kText : ObjType::kList;
    Object* obj = find(seq_obj, type);
    if (!obj) return not_a(seq_obj, type);
    Sequence& seq = *obj->seq;
    if (pos > seq.visible_length()) {
        return make_error(ErrorCode::kOutOfRange, "crdt: insert position " + std::to_string(pos) +
                                                      " is past the end (length " +
                                                      std::to_string(seq.visible_length()) + ")");
    }
    const uint64_t n = is_text ? chars.size() : values.size();
    if (n == 0) return {};
    if (n > kMaxRunLength) return make_error(ErrorCode::kInvalidArgument, "crdt: insert too long");
    const OpId first{lamport_ + 1, replica_};
    if (first_id) *first_id = first;
    const uint32_t content = is_text ? seq.add_chars(chars) : seq.add_values(values);
    const OpId origin = seq.insert_local(pos, first, static_cast<uint32_t>(n), content);

    // Typing on: extend the previous insert op instead of starting a new one.
    if (open_ && !local_.ops.empty()) {
        Op& last = local_.ops.back();
        if (last.kind == OpKind::kSeqInsert && last.obj == seq_obj && last_op_lamport_ + last.count == first.lamport &&
            origin == OpId{first.lamport - 1, replica_}) {
            last.count += static_cast<uint32_t>(n);
            if (is_text) last.text.append(chars);
            else last.values.insert(last.values.end(), values.begin(), values.end());
            lamport_ += n;
            vv_.set(replica_, lamport_);
            ++ops_applied_;
            return {};
        }
    }
    OpId id;
    Op& op = begin_local_op(n, id);
    op.kind = OpKind::kSeqInsert;
    op.obj = seq_obj;
    op.ref = origin;
    op.count = static_cast<uint32_t>(n);
    if (is_text) op.text.assign(chars);
    else op.values = std::move(values);
    return {};
}

Status Document::local_delete(ObjId seq_obj, uint64_t pos, uint64_t count, bool is_text) {
    const ObjType type = is_text ? ObjType::kText : ObjType::kList;
    Object* obj = find(seq_obj, type);
    if (!obj) return not_a(seq_obj, type);
    Sequence& seq = *obj->seq;
    if (pos > seq.visible_length() || count > seq.visible_length() - pos) {
        return make_error(ErrorCode::kOutOfRange, "crdt: delete of " + std::to_string(count) + " at " +
                                                      std::to_string(pos) + " runs past the end (length " +
                                                      std::to_string(seq.visible_length()) + ")");
    }
    seq.delete_local(pos, count, [&](OpId target, uint32_t n) -> OpId {
        if (open_ && !local_.ops.empty()) {
            Op& last = local_.ops.back();
            if (last.kind == OpKind::kSeqDelete && last.obj == seq_obj && last.ref.replica == target.replica &&
                last_op_lamport_ + last.count == lamport_ + 1) {
                const bool below = target.lamport + n == last.ref.lamport;
                const bool above = last.ref.lamport + last.count == target.lamport;
                if (below || above) {
                    if (below) last.ref.lamport = target.lamport;
                    last.count += n;
                    lamport_ += n;
                    vv_.set(replica_, lamport_);
                    ++ops_applied_;
                    return OpId{last_op_lamport_, replica_};
                }
            }
        }
        OpId id;
        Op& op = begin_local_op(n, id);
        op.kind = OpKind::kSeqDelete;
        op.obj = seq_obj;
        op.ref = target;
        op.count = n;
        return id;
    });
    return {};
}

Status Document::list_insert(ObjId list, uint64_t index, Value scalar) {
    if (scalar.is_object()) return make_error(ErrorCode::kInvalidArgument, "crdt: use list_insert_object for containers");
    std::vector<Value> v;
    v.push_back(std::move(scalar));
    return local_insert(list, index, {}, std::move(v), false, nullptr);
}

Result<ObjId> Document::list_insert_object(ObjId list, uint64_t index, ObjType type) {
    std::vector<Value> v;
    const ObjId id{lamport_ + 1, replica_};
    v.push_back(Value::object(id, type));
    OpId first;
    auto st = local_insert(list, index, {}, std::move(v), false, &first);
    if (!st.ok()) return st.error();
    create_object(id, type);
    return id;
}

Status Document::list_delete(ObjId list, uint64_t index, uint64_t count) {
    return local_delete(list, index, count, false);
}

Status Document::text_insert(ObjId text, uint64_t pos, std::string_view utf8) {
    std::u32string chars;
    if (!utf8_decode(utf8, chars)) return make_error(ErrorCode::kInvalidArgument, "crdt: text is not valid UTF-8");
    return local_insert(text, pos, chars, {}, true, nullptr);
}

Status Document::text_insert(ObjId text, uint64_t pos, std::u32string_view chars) {
    for (char32_t c : chars) {
        if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
            return make_error(ErrorCode::kInvalidArgument, "crdt: text holds an invalid code point");
        }
    }
    return local_insert(text, pos, chars, {}, true, nullptr);
}

Status Document::text_delete(ObjId text, uint64_t pos, uint64_t count) { return local_delete(text, pos, count, true); }

// --- reads ---

Result<ObjType> Document::type_of(ObjId obj) const {
    const Object* o = find_any(obj);
    if (!o) return make_error(ErrorCode::kNotFound, "crdt: no such object");
    return o->type;
}

Result<Value> Document::map_get(ObjId map, std::string_view key) const {
    const Object* obj = find(map, ObjType::kMap);
    if (!obj) return not_a(map, ObjType::kMap);
    auto it = obj->map.find(key);
    if (it == obj->map.end() || it->second.empty()) {
        return make_error(ErrorCode::kNotFound, "crdt: no key '" + std::string(key) + "'");
    }
    return it->second.front().value;
}

std::vector<Value> Document::map_get_all(ObjId map, std::string_view key) const {
    std::vector<Value> out;
    const Object* obj = find(map, ObjType::kMap);
    if (!obj) return out;
    auto it = obj->map.find(key);
    if (it == obj->map.end()) return out;
    for (const auto& e : it->second) out.push_back(e.value);
    return out;
}

std::vector<std::string> Document::map_keys(ObjId map) const {
    std::vector<std::string> out;
    const Object* obj = find(map, ObjType::kMap);
    if (!obj) return out;
    for (const auto& [k, v] : obj->map) out.push_back(k);
    return out;
}

Result<uint64_t> Document::length(ObjId seq) const {
    const Object* o = find_any(seq);
    if (!o || !o->seq) return make_error(ErrorCode::kInvalidArgument, "crdt: not a list or text");
    return o->seq->visible_length();
}

Result<Value> Document::list_get(ObjId list, uint64_t index) {
    Object* obj = find(list, ObjType::kList);
    if (!obj) return not_a(list, ObjType::kList);
    const Value* v = obj->seq->value_at(index);
    if (!v) return make_error(ErrorCode::kOutOfRange, "crdt: list index " + std::to_string(index) + " out of range");
    return *v;
}

Result<std::string> Document::text(ObjId text) const {
    const Object* obj = find(text, ObjType::kText);
    if (!obj) return not_a(text, ObjType::kText);
    return obj->seq->text();
}

Result<int64_t> Document::counter_value(ObjId counter) const {
    const Object* obj = find(counter, ObjType::kCounter);
    if (!obj) return not_a(counter, ObjType::kCounter);
    return obj->counter;
}

Result<Value> Document::register_get(ObjId reg) const {
    const Object* obj = find(reg, ObjType::kRegister);
    if (!obj) return not_a(reg, ObjType::kRegister);
    auto it = obj->map.find(std::string_view());
    if (it == obj->map.end() || it->second.empty()) return Value::null();
    return it->second.front().value;
}

void Document::json_value(std::string& out, const Value& v) const {
    switch (v.kind) {
        case Value::Kind::kNull: out += "null"; break;
        case Value::Kind::kBool: out += v.b ? "true" : "false"; break;
        case Value::Kind::kInt: out += std::to_string(v.i); break;
        case Value::Kind::kDouble: {
            if (!std::isfinite(v.d)) {
                out += "null";
                break;
            }
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.17g", v.d);
            out += buf;
            break;
        }
        case Value::Kind::kString: json_string(out, v.s); break;
        case Value::Kind::kObject: out += to_json(v.obj); break;
    }
}

std::string Document::to_json(ObjId id) const {
    const Object* obj = find_any(id);
    if (!obj) return "null";
    std::string out;
    switch (obj->type) {
        case ObjType::kMap: {
            out += "{";
            bool first = true;
            for (const auto& [k, entries] : obj->map) {
                if (entries.empty()) continue;
                if (!first) out += ",";
                first = false;
                json_string(out, k);
                out += ":";
                json_value(out, entries.front().value);
            }
            out += "}";
            break;
        }
        case ObjType::kList: {
            out += "[";
            bool first = true;
            obj->seq->for_each_visible_value([&](const Value& v) {
                if (!first) out += ",";
                first = false;
                json_value(out, v);
            });
            out += "]";
            break;
        }
        case ObjType::kText: json_string(out, text(id).value()); break;
        case ObjType::kCounter: out += std::to_string(obj->counter); break;
        case ObjType::kRegister: {
            auto it = obj->map.find(std::string_view());
            if (it == obj->map.end() || it->second.empty()) out += "null";
            else json_value(out, it->second.front().value);
            break;
        }
    }
    return out;
}

// --- replication ---

void Document::apply_op(const Op& op, OpId id, const VersionVector& deps) {
    // Everything an op names must be in its causal past, or replicas applying
    // changes in different (valid) orders could disagree. Honest authors
    // cannot produce such ops; hostile ones are ignored the same way everywhere.
    auto in_past = [&](OpId x) {
        return x.replica == id.replica ? x.lamport < id.lamport : deps.includes(x);
    };
    if (!op.obj.is_null() && !in_past(op.obj)) return;
    if (op.kind == OpKind::kSeqInsert && !op.ref.is_null() && !in_past(op.ref)) return;
    if (op.kind == OpKind::kSeqDelete && !in_past(OpId{op.ref.lamport + op.count - 1, op.ref.replica})) return;
    auto it = objects_.find(op.obj);
    // Unknown targets are containers dropped by a concurrent overwrite: invisible either way.
    if (it == objects_.end()) return;
    Object& obj = *it->second;
    ++ops_applied_;
    switch (op.kind) {
        case OpKind::kMapSet:
        case OpKind::kRegisterSet: {
            if ((op.kind == OpKind::kMapSet) != (obj.type == ObjType::kMap)) return;
            if (op.kind == OpKind::kRegisterSet && obj.type != ObjType::kRegister) return;
            Value v = op.value;
            if (v.is_object()) {
                v.obj = id;
                create_object(id, v.type);
            }
            apply_map_set(obj, op.kind == OpKind::kMapSet ? op.key : std::string(), v, id, deps);
            return;
        }
        case OpKind::kMapDelete:
            if (obj.type == ObjType::kMap) apply_map_delete(obj, op.key, id, deps);
            return;
        case OpKind::kCounterAdd:
            if (obj.type == ObjType::kCounter) {
                obj.counter = static_cast<int64_t>(static_cast<uint64_t>(obj.counter) + static_cast<uint64_t>(op.delta));
            }
            return;
        case OpKind::kSeqInsert: {
            if (!obj.seq) return;
            Sequence& seq = *obj.seq;
            uint32_t content;
            if (seq.is_text()) {
                if (op.text.size() != op.count) return;
                content = seq.add_chars(op.text);
            } else {
                if (op.values.size() != op.count) return;
                std::vector<Value> vals = op.values;
                for (uint32_t k = 0; k < op.count; ++k) {
                    if (vals[k].is_object()) {
                        vals[k].obj = OpId{id.lamport + k, id.replica};
                        create_object(vals[k].obj, vals[k].type);
                    }
                }
                content = seq.add_values(std::move(vals));
            }
            seq.insert_remote(op.ref, id, op.count, content);
            return;
        }
        case OpKind::kSeqDelete:
            if (obj.seq) obj.seq->delete_ids(op.ref, op.count, id);
            return;
    }
}

bool Document::ready(const Change& c) const {
    return c.prev == vv_.get(c.replica) && vv_.dominates(c.deps);
}

void Document::apply_change(const Change& c, std::string_view bytes) {
    uint64_t l = c.start;
    for (const Op& op : c.ops) {
        apply_op(op, OpId{l, c.replica}, c.deps);
        l += op.width();
    }
    vv_.set(c.replica, c.end());
    lamport_ = std::max(lamport_, c.end());
    history_[c.replica].push_back(StoredChange{c.start, c.end(), std::string(bytes)});
    VersionVector k = c.deps;
    k.set(c.replica, c.end());
    known_[c.replica] = std::move(k);
}

std::string Document::changes_since(const VersionVector& since) {
    commit();
    std::vector<std::pair<OpId, std::string_view>> picked;
    for (const auto& [replica, changes] : history_) {
        const uint64_t seen = since.get(replica);
        auto it = std::upper_bound(changes.begin(), changes.end(), seen,
                                   [](uint64_t s, const StoredChange& c) { return s < c.end; });
        for (; it != changes.end(); ++it) picked.emplace_back(OpId{it->start, replica}, it->bytes);
    }
    // Lamport order is a causal order: receivers rarely need to buffer.
    std::sort(picked.begin(), picked.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string_view> views;
    views.reserve(picked.size());
    for (const auto& p : picked) views.push_back(p.second);
    return encode_delta(views);
}

Status Document::apply(std::string_view delta) {
    commit();
    auto decoded = decode_delta(delta);
    if (!decoded.ok()) return decoded.error();
    return apply_changes(decoded.value());
}

Status Document::apply_changes(std::vector<DecodedChange>& changes) {
    bool applied = false;
    Status status;
    for (auto& dc : changes) {
        const Change& c = dc.change;
        const uint64_t have = vv_.get(c.replica);
        if (c.end() <= have) continue;  // duplicate
        if (c.prev < have) {
            status = corrupt("change " + std::to_string(c.start) + "@" + std::to_string(c.replica) +
                             " overlaps changes already applied");
            continue;
        }
        if (ready(c)) {
            apply_change(c, dc.bytes);
            applied = true;
            continue;
        }
        if (pending_.size() >= kMaxPendingChanges) {
            return make_error(ErrorCode::kResourceExhausted, "crdt: too many changes waiting for their causal past");
        }
        pending_.try_emplace({c.replica, c.start}, std::move(dc.change), std::string(dc.bytes));
    }
    while (applied && !pending_.empty()) {
        applied = false;
        for (auto it = pending_.begin(); it != pending_.end();) {
            const Change& c = it->second.first;
            const uint64_t have = vv_.get(c.replica);
            if (c.end() <= have || c.prev < have) {
                it = pending_.erase(it);
            } else if (ready(c)) {
                apply_change(c, it->second.second);
                it = pending_.erase(it);
                applied = true;
            } else {
                ++it;
            }
        }
    }
    return status;
}

// --- compaction ---

VersionVector Document::stable_version(const std::vector<ReplicaId>& members) const {
    VersionVector s = vv_;
    for (ReplicaId m : members) {
        if (m == replica_) continue;
        VersionVector k;
        auto it = known_.find(m);
        if (it != known_.end()) k = it->second;
        auto rep = reports_.find(m);
        if (rep != reports_.end() && vv_.get(m) >= rep->second.get(m)) k.merge(rep->second);
        if (k.empty()) return VersionVector{};
        s.intersect(k);
    }
    return s;
}

void Document::observe_peer_version(ReplicaId peer, const VersionVector& seen) {
    if (peer == replica_) return;
    reports_[peer].merge(seen);
}

uint64_t Document::compact(const VersionVector& stable) {
    commit();
    VersionVector s = stable;
    s.intersect(vv_);
    uint64_t removed = 0;
    for (auto& [id, obj] : objects_) {
        if (obj->seq) removed += obj->seq->compact(s);
    }
    return removed;
}

uint64_t Document::tombstone_count() const {
    uint64_t n = 0;
    for (const auto& [id, obj] : objects_) {
        if (obj->seq) n += obj->seq->tombstone_count();
    }
    return n;
}

// --- encoding ---

std::string Document::encode() {
    commit();
    std::vector<std::pair<OpId, const std::string*>> all;
    for (const auto& [replica, changes] : history_) {
        for (const auto& c : changes) all.emplace_back(OpId{c.start, replica}, &c.bytes);
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<Change> changes;
    changes.reserve(all.size());
    // Stored changes were decoded (or encoded) once already: they decode again.
    for (const auto& [id, bytes] : all) changes.push_back(decode_change(*bytes).value());
    return encode_document_columns(changes);
}

Result<Document> Document::decode(std::string_view bytes, ReplicaId replica) {
    Result<std::vector<DecodedChange>> decoded = std::vector<DecodedChange>{};
    // Version 2: each change's version-1 bytes, which history keeps.
    std::vector<std::string> repacked;
    if (bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == kDocumentMagic &&
        static_cast<uint8_t>(bytes[1]) == kColumnsFormatVersion) {
        auto changes = decode_document_columns(bytes);
        if (!changes.ok()) return changes.error();
        repacked.reserve(changes->size());
        for (const Change& c : changes.value()) {
            Writer w;
            encode_change(c, w);
            repacked.push_back(w.take());
        }
        // Through the version-1 change decoder: both versions accept the same changes.
        for (const std::string& b : repacked) {
            auto c = decode_change(b);
            if (!c.ok()) return c.error();
            decoded->push_back(DecodedChange{std::move(c).value(), b});
        }
    } else if (bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == kDocumentMagic &&
               static_cast<uint8_t>(bytes[1]) != kFormatVersion) {
        return make_error(ErrorCode::kUnsupported,
                          "crdt: document format version " +
                              std::to_string(static_cast<uint8_t>(bytes[1])) +
                              " is not supported (this build reads versions 1 and 2)");
    } else {
        decoded = decode_change_list(bytes, kDocumentMagic, "document");
        if (!decoded.ok()) return decoded.error();
    }
    std::vector<DecodedChange>& changes = decoded.value();
    Document doc(replica);
    auto st = doc.apply_changes(changes);
    if (!st.ok()) return st.error();
    if (doc.pending_changes() != 0) return corrupt("changes whose causal past is missing");
    return doc;
}

void Document::write_value_state(Writer& w, const Value& v) const {
    w.u8(static_cast<uint8_t>(v.kind));
    switch (v.kind) {
        case Value::Kind::kNull: break;
        case Value::Kind::kBool: w.u8(v.b ? 1 : 0); break;
        case Value::Kind::kInt: w.svarint(v.i); break;
        case Value::Kind::kDouble: w.f64(v.d); break;
        case Value::Kind::kString: w.bytes(v.s); break;
        case Value::Kind::kObject: {
            w.varint(v.obj.lamport);
            w.varint(v.obj.replica);
            const Object* o = find_any(v.obj);
            if (o) encode_obj_state(w, *o);
            else w.u8(0);
            break;
        }
    }
}

void Document::encode_obj_state(Writer& w, const Object& obj) const {
    w.u8(static_cast<uint8_t>(obj.type));
    switch (obj.type) {
        case ObjType::kMap:
        case ObjType::kRegister:
            w.varint(obj.map.size());
            for (const auto& [k, entries] : obj.map) {
                w.bytes(k);
                w.varint(entries.size());
                for (const auto& e : entries) {
                    w.varint(e.id.lamport);
                    w.varint(e.id.replica);
                    write_value_state(w, e.value);
                }
            }
            break;
        case ObjType::kList:
        case ObjType::kText:
            obj.seq->encode_state(w, [this](Writer& ww, const Value& v) { write_value_state(ww, v); });
            break;
        case ObjType::kCounter: w.svarint(obj.counter); break;
    }
}

std::string Document::encode_state() const {
    Writer w;
    w.varint(vv_.entries().size());
    for (const auto& [r, l] : vv_.entries()) {
        w.varint(r);
        w.varint(l);
    }
    encode_obj_state(w, *find_any(kRootObj));
    return w.take();
}

size_t Document::memory_bytes() const {
    size_t n = sizeof(*this);
    for (const auto& [id, obj] : objects_) {
        n += sizeof(Object) + 48;
        for (const auto& [k, entries] : obj->map) n += 64 + k.capacity() + entries.capacity() * sizeof(MapEntry);
        if (obj->seq) n += obj->seq->memory_bytes();
    }
    for (const auto& [r, changes] : history_) {
        n += changes.capacity() * sizeof(StoredChange);
        for (const auto& c : changes) n += c.bytes.capacity();
    }
    n += local_sealed_.str().capacity();
    for (const Op& op : local_.ops) n += sizeof(Op) + op.text.capacity() * sizeof(char32_t) + op.key.capacity();
    return n;
}

}  // namespace assistd::state::crdt
