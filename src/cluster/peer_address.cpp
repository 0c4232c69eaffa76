#include "cluster/peer_address.h"

#include <arpa/inet.h>

namespace assistd::cluster {

std::string address_host(const std::string& address) {
    if (!address.empty() && address.front() == '[') {
        const auto close = address.find(']');
        return close == std::string::npos ? std::string() : address.substr(1, close - 1);
    }
    return address.substr(0, address.rfind(':'));
}

std::optional<std::string> canonical_ip(const std::string& host) {
    unsigned char bytes[16];
    char text[INET6_ADDRSTRLEN];
    if (::inet_pton(AF_INET, host.c_str(), bytes) == 1) return std::string(::inet_ntop(AF_INET, bytes, text, sizeof text));
    if (::inet_pton(AF_INET6, host.c_str(), bytes) == 1)
        return std::string(::inet_ntop(AF_INET6, bytes, text, sizeof text));
    return std::nullopt;
}

}  // namespace assistd::cluster
