#pragma once
// A session's identity is (tenant, id): the same id under two tenants is two
// documents everywhere (store, replication, both sides of a partition),
// because the store key holds both. The key is built here and only here; the
// serving layer reads and lists a tenant's sessions through these functions,
// the cluster layer moves keys without looking inside them.
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "state/session_store.h"

namespace assistd::state {

// Neither tenant names ([A-Za-z0-9_.-]) nor session ids ([A-Za-z0-9_-]) may hold it.
inline constexpr char kTenantKeySeparator = ':';

// The store key of a tenant's session: "<tenant>:<id>", and the bare id for
// the tenant "" (an open server), which is also the key every session had
// before keys held tenants, so an open server's state needs no migration.
// Injective while neither part holds ':': a key's first ':' ends its tenant,
// and a key without one is the tenant ""'s (or an earlier version's, below).
std::string tenant_session_key(std::string_view tenant, std::string_view id);

// A tenant's session as found in the store.
struct TenantSession {
    std::string key;  // where it is stored
    Session session;  // session.id is the tenant's id, not the key
};

// The tenant's session `id`: under tenant_session_key, or, when that key was
// never used here, a session an earlier version stored under the bare id
// whose tenant register is this tenant (read and written where it is, never
// moved). Anything else -- another tenant's session, a deleted one, an id
// nobody used -- is kNotFound "session '<id>' does not exist", word for word
// the same. Other store errors (a fleet's replicas not answering) pass through.
Result<TenantSession> find_tenant_session(SessionStore& store, std::string_view tenant,
                                          std::string_view id);

// Every session of the tenant the store lists (SessionStore::list_by_tenant:
// on a fleet node, the sessions this node holds), earlier versions' included;
// a session deleted meanwhile is left out.
std::vector<TenantSession> list_tenant_sessions(SessionStore& store, std::string_view tenant);

}  // namespace assistd::state
