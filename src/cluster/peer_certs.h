#pragma once
// Issuing peer certificates, for the places that need a fleet of their own
// without an operator's CA: `assistd dev-cluster`, the tests and
// `assistd peer-cert`. Keys are ECDSA P-256; certificates follow the rule in
// peer_tls.h.
#include <string>
#include <string_view>
#include <vector>

#include "cluster/peer_tls.h"
#include "common/result.h"

namespace assistd::cluster {

struct PemCredentials {
    std::string cert;  // PEM certificate
    std::string key;   // PEM private key (PKCS#8)
};

// A self-signed CA that may sign peer certificates.
Result<PemCredentials> make_peer_ca(std::string_view common_name, int valid_days);
// A certificate for node `node_name` (URI SAN assistd-node:<name>), signed by
// `ca`, usable as a TLS server and client certificate.
Result<PemCredentials> make_peer_certificate(const PemCredentials& ca, std::string_view node_name,
                                             int valid_days);

// Writes ca.pem (the CA's certificate), <stem>.pem and <stem>-key.pem (mode 0600) into `dir`.
Status write_peer_credentials(const std::string& dir, const std::string& stem,
                              const PemCredentials& ca, const PemCredentials& node);

// A throwaway fleet: a fresh CA and a certificate for each of `node_names`,
// node k's files in <dir>/<name k>/ (dev-cluster, the tests).
Result<std::vector<PeerTlsFiles>> make_throwaway_fleet(const std::string& dir,
                                                       const std::vector<std::string>& node_names,
                                                       int valid_days);

}  // namespace assistd::cluster
