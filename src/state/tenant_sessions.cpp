#include "state/tenant_sessions.h"

#include <set>

namespace assistd::state {
namespace {

Error no_such_session(std::string_view id) {
    return make_error(ErrorCode::kNotFound, "session '" + std::string(id) + "' does not exist");
}

// The session under `key` if it is the tenant's; the error of the read otherwise.
Result<TenantSession> read_owned(SessionStore& store, const std::string& key,
                                 std::string_view tenant, std::string_view id) {
    auto session = store.get(key);
    if (!session.ok()) {
        if (session.error().code == ErrorCode::kNotFound) return no_such_session(id);
        return session.error();
    }
    // The tenant register decides for a bare key (earlier versions wrote every tenant's there).
    if (session->tenant != tenant) return no_such_session(id);
    session->id.assign(id);
    return TenantSession{key, std::move(session).value()};
}

}  // namespace

std::string tenant_session_key(std::string_view tenant, std::string_view id) {
    if (tenant.empty()) return std::string(id);
    std::string key;
    key.reserve(tenant.size() + 1 + id.size());
    key.append(tenant);
    key.push_back(kTenantKeySeparator);
    key.append(id);
    return key;
}

Result<TenantSession> find_tenant_session(SessionStore& store, std::string_view tenant,
                                          std::string_view id) {
    const std::string key = tenant_session_key(tenant, id);
    auto found = read_owned(store, key, tenant, id);
    if (found.ok() || found.error().code != ErrorCode::kNotFound || tenant.empty()) return found;
    // A deleted keyed session stays deleted: no falling back to an older one under the bare id.
    if (store.deleted(key)) return found;
    return read_owned(store, std::string(id), tenant, id);
}

std::vector<TenantSession> list_tenant_sessions(SessionStore& store, std::string_view tenant) {
    const std::vector<std::string> keys = store.list_by_tenant(tenant);
    const std::set<std::string_view> listed(keys.begin(), keys.end());
    std::vector<TenantSession> out;
    for (const auto& key : keys) {
        const size_t separator = key.find(kTenantKeySeparator);
        std::string_view id = key;
        if (separator != std::string::npos) {
            if (std::string_view(key).substr(0, separator) != tenant)
                continue;  // another tenant's key
            id.remove_prefix(separator + 1);
        } else if (!tenant.empty()) {
            // An earlier version's session under the bare id counts only while its keyed twin was
            // never used, as in find_tenant_session.
            const std::string keyed = tenant_session_key(tenant, id);
            if (listed.count(keyed) || store.deleted(keyed)) continue;
        }
        if (auto found = read_owned(store, key, tenant, id); found.ok())
            out.push_back(std::move(found).value());
    }
    return out;
}

}  // namespace assistd::state
