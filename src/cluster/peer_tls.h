#pragma once
// Mutual TLS between the peers of a fleet: the files a node presents and
// trusts, and the one rule that ties a certificate to a node id. A peer
// certificate names its node in a URI subject alternative name
// "assistd-node:<name>", <name> as --node-id takes it (1-16 hex digits, or a
// pod name, hashed): a frame is taken only from the node its sender's
// certificate names (docs/trust.md).
#include <string>
#include <string_view>

#include "cluster/node_identity.h"
#include "common/result.h"

namespace assistd::cluster {

inline constexpr std::string_view kNodeUriPrefix = "assistd-node:";

struct PeerTlsFiles {
    std::string cert_path;  // PEM: this node's certificate (its chain may follow)
    std::string key_path;   // PEM: its private key
    std::string ca_path;    // PEM: the fleet's CA, which every peer certificate must chain to
    bool empty() const { return cert_path.empty() && key_path.empty() && ca_path.empty(); }
};

// The node name in a PEM certificate's one assistd-node URI SAN; an error
// when there is none, more than one, or the name is not a valid node name.
Result<std::string> node_name_of_certificate(std::string_view cert_pem);

// What a node checks before it listens: the three files are readable PEM, the
// certificate chains to the CA and is within its validity, the key is the
// certificate's, and the certificate names a node. Returns that node's name.
Result<std::string> check_peer_tls_files(const PeerTlsFiles& files);

}  // namespace assistd::cluster
