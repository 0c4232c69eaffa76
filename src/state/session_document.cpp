#include "state/session_document.h"

namespace assistd::state {

using crdt::ObjId;
using crdt::ObjType;
using crdt::Value;

namespace {
#define RETURN_IF_ERROR(expr)                     \
    do {                                          \
        auto _st = (expr);                        \
        if (!_st.ok()) return _st.error();        \
    } while (0)

std::string string_or_empty(const Result<Value>& v) {
    return v.ok() && v->kind == Value::Kind::kString ? v->s : std::string();
}
int64_t int_or_zero(const Result<Value>& v) { return v.ok() && v->kind == Value::Kind::kInt ? v->i : 0; }
}  // namespace

const std::string& SessionDocument::skeleton_delta() {
    static const std::string delta = [] {
        crdt::Document d(kSkeletonReplica);
        const ObjId root = d.root();
        // Fresh containers on an empty document cannot fail.
        (void)d.map_set_object(root, "messages", ObjType::kList);
        (void)d.map_set_object(root, "metadata", ObjType::kMap);
        const auto usage = d.map_set_object(root, "usage", ObjType::kMap);
        (void)d.map_set_object(*usage, "prompt_tokens", ObjType::kCounter);
        (void)d.map_set_object(*usage, "completion_tokens", ObjType::kCounter);
        (void)d.map_set_object(root, "summary", ObjType::kRegister);
        return d.changes_since({});
    }();
    return delta;
}

Result<SessionDocument> SessionDocument::create(crdt::ReplicaId replica, std::string_view tenant,
                                                std::string_view title, int64_t now_ms) {
    crdt::Document d(replica);
    RETURN_IF_ERROR(d.apply(skeleton_delta()));
    const ObjId root = d.root();
    RETURN_IF_ERROR(d.map_set(root, "tenant", Value::string(std::string(tenant))));
    RETURN_IF_ERROR(d.map_set(root, "title", Value::string(std::string(title))));
    RETURN_IF_ERROR(d.map_set(root, "created_at", Value::integer(now_ms)));
    return SessionDocument(std::move(d));
}

Result<ObjId> SessionDocument::child(std::string_view key, ObjType type) const {
    auto v = doc_.map_get(doc_.root(), key);
    if (!v.ok() || !v->is_object() || v->type != type) {
        return make_error(ErrorCode::kCorrupt, "session document has no " + std::string(crdt::obj_type_name(type)) +
                                                   " '" + std::string(key) + "'");
    }
    return v->obj;
}

std::string SessionDocument::tenant() const { return string_or_empty(doc_.map_get(doc_.root(), "tenant")); }

Result<Message> SessionDocument::append_message(const MessageInput& input, int64_t now_ms) {
    auto list = child("messages", ObjType::kList);
    if (!list.ok()) return list.error();
    const uint64_t n = doc_.length(*list).value();
    auto m = doc_.list_insert_object(*list, n, ObjType::kMap);
    if (!m.ok()) return m.error();
    Message msg;
    msg.id = std::to_string(m->replica) + "-" + std::to_string(m->lamport);
    msg.role = input.role;
    msg.content = input.content;
    msg.created_at_ms = now_ms;
    msg.author = m->replica;
    RETURN_IF_ERROR(doc_.map_set(*m, "id", Value::string(msg.id)));
    RETURN_IF_ERROR(doc_.map_set(*m, "role", Value::string(msg.role)));
    RETURN_IF_ERROR(doc_.map_set(*m, "content", Value::string(msg.content)));
    RETURN_IF_ERROR(doc_.map_set(*m, "created_at", Value::integer(now_ms)));
    RETURN_IF_ERROR(doc_.map_set(*m, "author", Value::integer(static_cast<int64_t>(msg.author))));
    return msg;
}

Status SessionDocument::update_metadata(std::string_view key, std::string_view value) {
    auto meta = child("metadata", ObjType::kMap);
    if (!meta.ok()) return meta.error();
    return doc_.map_set(*meta, key, Value::string(std::string(value)));
}

Status SessionDocument::add_usage(int64_t prompt_tokens, int64_t completion_tokens) {
    auto usage = child("usage", ObjType::kMap);
    if (!usage.ok()) return usage.error();
    auto p = doc_.map_get(*usage, "prompt_tokens");
    auto c = doc_.map_get(*usage, "completion_tokens");
    if (!p.ok() || !c.ok()) return make_error(ErrorCode::kCorrupt, "session document has no usage counters");
    if (prompt_tokens != 0) RETURN_IF_ERROR(doc_.counter_add(p->obj, prompt_tokens));
    if (completion_tokens != 0) RETURN_IF_ERROR(doc_.counter_add(c->obj, completion_tokens));
    return {};
}

Status SessionDocument::set_summary(std::string_view summary) {
    auto reg = child("summary", ObjType::kRegister);
    if (!reg.ok()) return reg.error();
    return doc_.register_set(*reg, Value::string(std::string(summary)));
}

Result<Session> SessionDocument::read(std::string_view id) {
    Session s;
    s.id.assign(id);
    const ObjId root = doc_.root();
    s.tenant = string_or_empty(doc_.map_get(root, "tenant"));
    s.title = string_or_empty(doc_.map_get(root, "title"));
    s.created_at_ms = int_or_zero(doc_.map_get(root, "created_at"));
    if (auto list = child("messages", ObjType::kList); list.ok()) {
        const uint64_t n = doc_.length(*list).value();
        s.messages.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
            auto v = doc_.list_get(*list, i);
            if (!v.ok() || !v->is_object()) continue;
            Message m;
            m.id = string_or_empty(doc_.map_get(v->obj, "id"));
            m.role = string_or_empty(doc_.map_get(v->obj, "role"));
            m.content = string_or_empty(doc_.map_get(v->obj, "content"));
            m.created_at_ms = int_or_zero(doc_.map_get(v->obj, "created_at"));
            m.author = static_cast<uint64_t>(int_or_zero(doc_.map_get(v->obj, "author")));
            s.messages.push_back(std::move(m));
        }
    }
    if (auto meta = child("metadata", ObjType::kMap); meta.ok()) {
        for (const auto& k : doc_.map_keys(*meta)) s.metadata[k] = string_or_empty(doc_.map_get(*meta, k));
    }
    if (auto usage = child("usage", ObjType::kMap); usage.ok()) {
        auto p = doc_.map_get(*usage, "prompt_tokens");
        auto c = doc_.map_get(*usage, "completion_tokens");
        if (p.ok()) s.prompt_tokens = doc_.counter_value(p->obj).ok() ? doc_.counter_value(p->obj).value() : 0;
        if (c.ok()) s.completion_tokens = doc_.counter_value(c->obj).ok() ? doc_.counter_value(c->obj).value() : 0;
    }
    if (auto reg = child("summary", ObjType::kRegister); reg.ok()) s.summary = string_or_empty(doc_.register_get(*reg));
    return s;
}

}  // namespace assistd::state
