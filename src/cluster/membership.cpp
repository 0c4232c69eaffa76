#include "cluster/membership.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <set>

namespace assistd::cluster {

Result<std::vector<std::string>> SystemResolver::resolve(const std::string& host) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0)
        return make_error(ErrorCode::kNotFound,
                          "cannot resolve '" + host + "': " + ::gai_strerror(rc));
    std::set<std::string> out;
    for (addrinfo* a = res; a; a = a->ai_next) {
        char buf[INET6_ADDRSTRLEN] = {};
        if (a->ai_family == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, buf,
                        sizeof buf);
            out.insert(buf);
        } else if (a->ai_family == AF_INET6) {
            ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf,
                        sizeof buf);
            out.insert(std::string("[") + buf + "]");
        }
    }
    ::freeaddrinfo(res);
    return std::vector<std::string>(out.begin(), out.end());
}

Result<std::vector<std::string>> DnsDiscovery::peers() {
    auto ips = resolver_.resolve(host_);
    if (!ips.ok()) return make_error(ips.error().code, "peer discovery: " + ips.error().message);
    std::vector<std::string> out;
    for (const auto& ip : *ips) out.push_back(ip + ":" + std::to_string(port_));
    std::sort(out.begin(), out.end());
    return out;
}

Result<std::vector<std::string>> parse_peer_list(const std::string& text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = text.find(',', start);
        const std::string entry =
            text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        start = comma == std::string::npos ? text.size() + 1 : comma + 1;
        if (entry.empty()) continue;
        const size_t colon = entry.rfind(':');
        const std::string host = colon == std::string::npos ? "" : entry.substr(0, colon);
        const std::string port = colon == std::string::npos ? "" : entry.substr(colon + 1);
        bool port_ok =
            !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), ::isdigit);
        if (port_ok) {
            const long p = std::stol(port);
            port_ok = p >= 1 && p <= 65535;
        }
        if (host.empty() || !port_ok) {
            return make_error(ErrorCode::kInvalidArgument,
                              "peer '" + entry + "' must be host:port with a port from 1 to 65535");
        }
        out.push_back(entry);
    }
    if (out.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "the peer list is empty: give host:port[,host:port...]");
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

Result<std::unique_ptr<Discovery>> make_discovery(const std::string& spec, Resolver& resolver) {
    if (spec.rfind("dns:", 0) == 0) {
        const std::string rest = spec.substr(4);
        auto parsed = parse_peer_list(rest);
        if (!parsed.ok() || parsed->size() != 1) {
            return make_error(ErrorCode::kInvalidArgument,
                              "peer discovery '" + spec + "' must be dns:NAME:PORT");
        }
        const std::string& entry = parsed->front();
        const size_t colon = entry.rfind(':');
        return std::unique_ptr<Discovery>(std::make_unique<DnsDiscovery>(
            entry.substr(0, colon), static_cast<uint16_t>(std::stoul(entry.substr(colon + 1))),
            resolver));
    }
    auto list = parse_peer_list(spec);
    if (!list.ok()) return list.error();
    return std::unique_ptr<Discovery>(std::make_unique<StaticDiscovery>(std::move(list).value()));
}

const char* peer_health_name(PeerHealth health) {
    switch (health) {
        case PeerHealth::kUnknown:
            return "unknown";
        case PeerHealth::kLive:
            return "live";
        case PeerHealth::kSuspect:
            return "suspect";
        case PeerHealth::kDeparted:
            return "departed";
    }
    return "unknown";
}

bool Membership::set_discovered(const std::vector<std::string>& addresses) {
    const auto before = members();
    const std::set<std::string> now(addresses.begin(), addresses.end());
    for (auto it = peers_.begin(); it != peers_.end();) {
        it->second.discovered = now.count(it->first) > 0;
        // A peer that is neither discovered nor heard from recently is forgotten.
        if (!it->second.discovered && it->second.health != PeerHealth::kLive)
            it = peers_.erase(it);
        else
            ++it;
    }
    for (const auto& a : now) {
        if (a == self_address_ || self_aliases_.count(a)) continue;
        auto& p = peers_[a];
        p.address = a;
        p.discovered = true;
    }
    return members() != before;
}

bool Membership::heard(const std::string& address, NodeId node, int64_t now_ms,
                       bool& members_changed, uint64_t hello_incarnation) {
    members_changed = false;
    if (address == self_address_) return false;
    if (node == self_) {
        // Our own frame came back through another address (the DNS lists our
        // pod IP, the peer list names us differently): that address is us.
        self_aliases_.insert(address);
        peers_.erase(address);
        return false;
    }
    const auto before = members();
    auto& life = lives_[node];
    life = std::max(life, hello_incarnation);
    bool back = false;  // a departed node's next life said hello
    if (auto d = departed_.find(node); d != departed_.end() && hello_incarnation > d->second) {
        departed_.erase(d);
        back = true;
    }
    auto& p = peers_[address];
    const bool was_live =
        !back && p.health == PeerHealth::kLive && p.node_id == node && !departed_.count(node);
    p.address = address;
    p.node_id = node;
    p.last_heard_ms = now_ms;
    p.health = PeerHealth::kLive;
    members_changed = members() != before;
    // A departed life still talking (its last frames, or heartbeats until it
    // exits) is no reconnect.
    if (departed_.count(node)) return false;
    return !was_live;
}

bool Membership::depart(NodeId node, uint64_t incarnation) {
    if (node == self_) return false;
    const auto life = lives_.find(node);
    if (life != lives_.end() && life->second > incarnation) return false;  // an older life's
    const auto before = members();
    auto& d = departed_[node];
    d = std::max(d, incarnation);
    return members() != before;
}

std::vector<NodeId> Membership::update_health(int64_t now_ms) {
    std::vector<NodeId> suspect;
    for (auto& [a, p] : peers_) {
        if (p.last_heard_ms < 0) continue;
        if (p.health == PeerHealth::kLive && now_ms - p.last_heard_ms > suspect_after_ms_) {
            p.health = PeerHealth::kSuspect;
            suspect.push_back(p.node_id);
        }
    }
    return suspect;
}

std::vector<NodeId> Membership::members() const {
    std::vector<NodeId> out;
    if (!leaving_) out.push_back(self_);
    for (const auto& [a, p] : peers_) {
        if (p.discovered && p.node_id != 0 && !departed_.count(p.node_id))
            out.push_back(p.node_id);
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<std::string> Membership::peer_addresses() const {
    std::vector<std::string> out;
    for (const auto& [a, p] : peers_) {
        // A live peer outside discovery (a node that is leaving, or one the
        // DNS does not list yet) hears from us too, so it can tell we are up.
        if (p.discovered || p.health == PeerHealth::kLive) out.push_back(a);
    }
    return out;
}

size_t Membership::count_discovered(bool departed_too) const {
    std::set<NodeId> ids;
    size_t unknown = 0;
    for (const auto& [a, p] : peers_) {
        if (!p.discovered) continue;
        if (p.node_id == 0)
            ++unknown;
        else if (departed_too || !departed_.count(p.node_id))
            ids.insert(p.node_id);
    }
    return ids.size() + unknown;
}

size_t Membership::discovered_peer_count() const {
    return count_discovered(true);
}

size_t Membership::possible_peer_count() const {
    return count_discovered(false);
}

const PeerInfo* Membership::newest_for(NodeId node) const {
    const PeerInfo* best = nullptr;
    for (const auto& [a, p] : peers_) {
        if (p.node_id == node && (!best || p.last_heard_ms > best->last_heard_ms)) best = &p;
    }
    return best;
}

bool Membership::is_live(NodeId node) const {
    return health(node) == PeerHealth::kLive;
}

PeerHealth Membership::health(NodeId node) const {
    if (node == self_) return PeerHealth::kLive;
    if (departed_.count(node)) return PeerHealth::kDeparted;
    const PeerInfo* p = newest_for(node);
    return p ? p->health : PeerHealth::kUnknown;
}

std::optional<std::string> Membership::address_of(NodeId node) const {
    const PeerInfo* p = newest_for(node);
    if (!p) return std::nullopt;
    return p->address;
}

std::vector<PeerInfo> Membership::peers() const {
    std::vector<PeerInfo> out;
    for (const auto& [a, p] : peers_) {
        out.push_back(p);
        if (p.node_id != 0 && departed_.count(p.node_id)) out.back().health = PeerHealth::kDeparted;
    }
    return out;
}

}  // namespace assistd::cluster
