#include "cluster/replicator_departure.h"

#include <spdlog/spdlog.h>

namespace assistd::cluster::replication {

void Departure::leave() {
    s_.membership.set_leaving(true);
    s_.members_changed();
}

void Departure::send_leave(NodeId peer) {
    Leave m;
    m.id = s_.identity.incarnation;
    s_.send(peer, std::move(m));
}

void Departure::announce() {
    if (!s_.membership.leaving()) leave();
    announced_ = true;
    pending_.clear();
    for (const auto& p : s_.membership.peers()) {
        if (p.node_id != 0 && s_.membership.is_live(p.node_id)) pending_.insert(p.node_id);
    }
    // Peers whose id is not known yet hear it too: they learn the id from the header.
    for (const auto& a : s_.membership.peer_addresses()) {
        Leave m;
        m.id = s_.identity.incarnation;
        s_.send_to(a, std::move(m));
    }
    next_leave_ms_ = s_.now_ms() + s_.options.heartbeat_interval_ms;
}

size_t Departure::unconfirmed() const {
    size_t n = 0;
    for (NodeId p : pending_) {
        if (s_.membership.is_live(p)) ++n;
    }
    return n;
}

void Departure::tick(int64_t now) {
    if (!announced_ || now < next_leave_ms_) return;
    next_leave_ms_ = now + s_.options.heartbeat_interval_ms;
    for (NodeId p : pending_) {
        if (s_.membership.is_live(p)) send_leave(p);
    }
}

void Departure::on_leave(const Leave& m, Completions& done) {
    peer_departed(m.from, m.id, done);
    LeaveAck ack;
    ack.id = m.id;
    s_.send_to(m.from_address, std::move(ack));
}

void Departure::on_leave_ack(const LeaveAck& m) {
    if (m.id == s_.identity.incarnation) pending_.erase(m.from);
}

void Departure::peer_departed(NodeId node, uint64_t incarnation, Completions& done) {
    if (s_.membership.departed(node)) return;  // a resent leave
    const bool changed = s_.membership.depart(node, incarnation);
    if (!s_.membership.departed(node)) return;  // a leave of an older life
    if (changed) s_.members_changed();
    ++s_.stats.departures;
    spdlog::info("cluster: node {} left the fleet (incarnation {})", format_node_id(node),
                 incarnation);
    // Waits that counted on it: a refresh stops waiting for it, a fetch asks
    // the session's replicas as placed now.
    reads_.peer_departed(node, done);
}

}  // namespace assistd::cluster::replication
