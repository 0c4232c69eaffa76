#include "cli/serve_kv_standby.h"

#include <utility>
#include <vector>

#if ASSISTD_HAVE_CLUSTER
#include "cluster/fleet_node.h"
#endif

namespace assistd::cli {

using serve::KvSendResult;
using serve::KvStandbyShipper;
using serve::KvStandbyStore;

Result<ServeKvStandby> make_serve_kv_standby(const ServeKvStandbyOptions& options, uint64_t fingerprint,
                                             cluster::FleetNode* fleet) {
    ServeKvStandby out;
    out.on_disk = !options.store.dir.empty();
    if (!fleet && !out.on_disk) return out;
    auto opened = KvStandbyStore::open(options.store, fingerprint);
    if (!opened) return opened.error();
    out.store = std::move(*opened);
    std::vector<KvStandbyShipper::Send> destinations;
#if ASSISTD_HAVE_CLUSTER
    if (fleet) {
        destinations.push_back([fleet](std::string_view key, uint64_t prefix_hash, std::string_view blob) {
            switch (fleet->send_standby_kv(key, serve::encode_kv_run_header(key, prefix_hash), blob)) {
                case cluster::KvStandbyLink::SendOutcome::kSent: return KvSendResult::kSent;
                case cluster::KvStandbyLink::SendOutcome::kNoTarget: return KvSendResult::kNoTarget;
                default: return KvSendResult::kDropped;
            }
        });
        // A run that continues what this node lacks (lost on the way, or this
        // node restarted) gets its sender told: it resends the session.
        fleet->set_standby_kv_handler([store = out.store.get(), fleet](std::string_view payload, cluster::NodeId from) {
            auto taken = store->receive(payload);  // refusals are counted and logged there
            if (!taken && taken.error().code == ErrorCode::kNotFound)
                if (auto run = serve::decode_kv_run(payload)) fleet->send_standby_gap_notice(from, run->key);
        });
    }
#endif
    if (out.on_disk)
        destinations.push_back([store = out.store.get()](std::string_view key, uint64_t prefix_hash,
                                                         std::string_view blob) {
            return store->keep_own(key, prefix_hash, std::string(blob)).ok() ? KvSendResult::kSent
                                                                            : KvSendResult::kDropped;
        });
    serve::KvStandbyShipperConfig shipping;
    shipping.bytes_per_token = options.bytes_per_token;
    out.shipper = std::make_unique<KvStandbyShipper>(shipping, std::move(destinations));
#if ASSISTD_HAVE_CLUSTER
    if (fleet)  // the peers are destination 0
        fleet->set_standby_gap_handler(
            [shipper = out.shipper.get()](std::string_view key, cluster::NodeId) { shipper->forget(0, key); });
#endif
    return out;
}

}  // namespace assistd::cli
