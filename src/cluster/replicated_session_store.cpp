#include "cluster/replicated_session_store.h"

namespace assistd::cluster {

Status ReplicatedSessionStore::ensure_local(std::string_view id) {
    // A change merges into whatever copy is here (a CRDT); the turn read the
    // history it answers with get() first.
    if (local_.deleted(id) || local_.version(id).ok()) return {};
    return read(id);
}

Status ReplicatedSessionStore::read(std::string_view id) {
    auto st = driver_.read(id, fetch_timeout_ms_);
    if (st.ok() || st.error().code == ErrorCode::kNotFound)
        return {};  // deleted, or absent from every node that may hold it: the local store says so
    return st;
}

Status ReplicatedSessionStore::replicated(std::string_view id) {
    state::crdt::VersionVector version;
    if (!local_.deleted(id)) {
        auto v = local_.version(id);
        if (!v.ok()) return v.error();
        version = std::move(v).value();
    }
    auto st = driver_.await_replication(id, version, ack_timeout_ms_);
    if (st.ok()) return st;
    return make_error(
        st.error().code,
        st.error().message + ". The change is stored on this node; a retry may apply it twice");
}

template <typename Fn>
auto ReplicatedSessionStore::with_session(std::string_view id, Fn&& change) -> decltype(change()) {
    if (auto st = ensure_local(id); !st.ok()) return st.error();
    auto result = change();
    if (!result.ok()) return result;
    if (auto st = replicated(id); !st.ok()) return st.error();
    return result;
}

Status ReplicatedSessionStore::create(std::string_view id, std::string_view tenant,
                                      std::string_view title) {
    // No read first: the caller read the id and found it nowhere (a turn), or
    // generated it (POST /v1/sessions).
    if (auto st = local_.create(id, tenant, title); !st.ok()) return st;
    return replicated(id);
}

Result<state::Session> ReplicatedSessionStore::get(std::string_view id) {
    // Any copy may miss a change acknowledged elsewhere (its writer died before
    // pushing it here, or wrote to a stand-in): hear from enough nodes first.
    if (auto st = read(id); !st.ok()) return st.error();
    return local_.get(id);
}

Result<state::Message> ReplicatedSessionStore::append_message(std::string_view id,
                                                              const state::MessageInput& message) {
    return with_session(id, [&] { return local_.append_message(id, message); });
}

Status ReplicatedSessionStore::update_metadata(std::string_view id, std::string_view key,
                                               std::string_view value) {
    return with_session(id, [&] { return local_.update_metadata(id, key, value); });
}

Status ReplicatedSessionStore::add_usage(std::string_view id, int64_t prompt_tokens,
                                         int64_t completion_tokens) {
    return with_session(id, [&] { return local_.add_usage(id, prompt_tokens, completion_tokens); });
}

Status ReplicatedSessionStore::set_summary(std::string_view id, std::string_view summary) {
    return with_session(id, [&] { return local_.set_summary(id, summary); });
}

Status ReplicatedSessionStore::remove(std::string_view id) {
    return with_session(id, [&] { return local_.remove(id); });
}

}  // namespace assistd::cluster
