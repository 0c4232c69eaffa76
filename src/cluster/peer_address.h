#pragma once
// The host part of a peer address, and IPs in one spelling: peers take a frame
// only from the host its sender address names, compared as IPs.
#include <optional>
#include <string>

namespace assistd::cluster {

// "10.0.0.7:9090" -> "10.0.0.7", "[::1]:9090" -> "::1".
std::string address_host(const std::string& address);
// The IP's canonical text ("FD00::0001" -> "fd00::1"); nullopt when `host` is no IP literal.
std::optional<std::string> canonical_ip(const std::string& host);

}  // namespace assistd::cluster
