#pragma once
// Who is in the fleet. Discovery yields peer addresses (a static list, or a
// DNS name such as a Kubernetes headless Service re-resolved periodically);
// a peer's node id is learned from the first message it sends. Health comes
// from hearing a peer: live while something arrived within suspect_after_ms,
// suspect after that, unknown before the first message.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cluster/node_identity.h"
#include "common/result.h"

namespace assistd::cluster {

class Discovery {
  public:
    virtual ~Discovery() = default;
    // The fleet's peer addresses ("host:port"); this node's own may be among them.
    virtual Result<std::vector<std::string>> peers() = 0;
};

class StaticDiscovery final : public Discovery {
  public:
    explicit StaticDiscovery(std::vector<std::string> addresses)
        : addresses_(std::move(addresses)) {}
    Result<std::vector<std::string>> peers() override { return addresses_; }

  private:
    std::vector<std::string> addresses_;
};

// Name resolution, injected so tests decide what a name resolves to.
class Resolver {
  public:
    virtual ~Resolver() = default;
    // The IP addresses `host` resolves to (text form).
    virtual Result<std::vector<std::string>> resolve(const std::string& host) = 0;
};

class SystemResolver final : public Resolver {
  public:
    Result<std::vector<std::string>> resolve(const std::string& host) override;  // getaddrinfo
};

// Every address of `host`, each with `port`: the members behind a headless Service.
class DnsDiscovery final : public Discovery {
  public:
    DnsDiscovery(std::string host, uint16_t port, Resolver& resolver)
        : host_(std::move(host)), port_(port), resolver_(resolver) {}
    Result<std::vector<std::string>> peers() override;

  private:
    std::string host_;
    uint16_t port_;
    Resolver& resolver_;
};

// "host:port[,host:port...]" -> addresses; a clear error names the bad entry.
Result<std::vector<std::string>> parse_peer_list(const std::string& text);
// "dns:NAME:PORT" (DNS discovery) or a static list: the Discovery it names.
Result<std::unique_ptr<Discovery>> make_discovery(const std::string& spec, Resolver& resolver);

// kDeparted: the peer announced it leaves (a drain); it is no member and not
// live until a later life of it says hello.
enum class PeerHealth { kUnknown, kLive, kSuspect, kDeparted };
const char* peer_health_name(PeerHealth health);

struct PeerInfo {
    std::string address;
    NodeId node_id = 0;          // 0 until the peer has sent something
    int64_t last_heard_ms = -1;  // monotonic ms; -1: never
    bool discovered = false;     // in the discovery result (else only heard from)
    PeerHealth health = PeerHealth::kUnknown;
};

class Membership {
  public:
    Membership(NodeId self, std::string self_address, int64_t suspect_after_ms)
        : self_(self),
          self_address_(std::move(self_address)),
          suspect_after_ms_(suspect_after_ms) {}

    // Replaces the discovered addresses; true when the placeable members changed.
    bool set_discovered(const std::vector<std::string>& addresses);
    // A message from `node` at `address` arrived. Returns true when the peer
    // was not live before (first contact or a reconnect); `members_changed`
    // tells whether placement must be recomputed. `hello_incarnation` is the
    // life a heartbeat names (0: not a heartbeat, or a node that does not
    // say): a departed peer comes back only with a later life than the one
    // that left.
    bool heard(const std::string& address, NodeId node, int64_t now_ms, bool& members_changed,
               uint64_t hello_incarnation = 0);
    // `node` announced that its life `incarnation` leaves: from now on it is
    // no member and not live (no waiting for suspicion). A leave of a life
    // older than one already heard from is ignored. True when the members changed.
    bool depart(NodeId node, uint64_t incarnation);
    bool departed(NodeId node) const { return departed_.count(node) > 0; }
    // Leaving (a drain): this node no longer counts itself a member, so every
    // session it holds is handed to the others.
    void set_leaving(bool leaving) { leaving_ = leaving; }
    bool leaving() const { return leaving_; }
    // Recomputes health; returns the peers that just became suspect.
    std::vector<NodeId> update_health(int64_t now_ms);

    NodeId self() const { return self_; }
    // This node and every discovered peer whose id is known, sorted: the input of placement.
    std::vector<NodeId> members() const;
    // Where heartbeats go: discovered peers (this node excluded) and live ones
    // outside discovery.
    std::vector<std::string> peer_addresses() const;
    size_t discovered_peer_count() const;
    // Discovered peers that have not departed (those never heard from count):
    // every other node that may hold a copy of something.
    size_t possible_peer_count() const;
    bool is_live(NodeId node) const;
    PeerHealth health(NodeId node) const;
    // Where `node` was last heard from (its most recent address).
    std::optional<std::string> address_of(NodeId node) const;
    std::vector<PeerInfo> peers() const;

  private:
    const PeerInfo* newest_for(NodeId node) const;
    // Discovered peers, each node once, those never heard from included.
    size_t count_discovered(bool departed_too) const;

    NodeId self_;
    std::string self_address_;
    int64_t suspect_after_ms_;
    std::map<std::string, PeerInfo> peers_;  // by address
    std::map<NodeId, uint64_t> departed_;    // node -> the life that announced its leave
    std::map<NodeId, uint64_t> lives_;       // node -> the latest life a heartbeat named
    bool leaving_ = false;
    std::set<std::string> self_aliases_;  // other addresses that turned out to be this node
};

}  // namespace assistd::cluster
