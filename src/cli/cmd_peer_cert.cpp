// `assistd peer-cert`: the certificates a fleet's peers authenticate each
// other with (docs/trust.md), for fleets without cert-manager.
//   assistd peer-cert ca --out DIR            a fleet CA: DIR/ca.pem, DIR/ca-key.pem
//   assistd peer-cert issue --ca DIR --node NAME --out DIR
//                                             DIR/node.pem, DIR/node-key.pem, DIR/ca.pem
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/commands.h"
#include "cluster/peer_certs.h"
#include "cluster/peer_tls.h"

namespace assistd::cli {
namespace {

bool read_text(const std::filesystem::path& path, std::string& out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream text;
    text << in.rdbuf();
    out = text.str();
    return true;
}

int make_ca(const std::string& out, int days) {
    if (std::filesystem::exists(std::filesystem::path(out) / "ca-key.pem")) {
        std::fprintf(stderr, "assistd peer-cert ca: %s/ca-key.pem exists; a new CA would not be "
                             "trusted by the fleet's current certificates (choose another --out)\n",
                     out.c_str());
        return 2;
    }
    auto ca = cluster::make_peer_ca("assistd peer CA", days);
    if (!ca.ok()) {
        std::fprintf(stderr, "assistd peer-cert ca: %s\n", ca.error().message.c_str());
        return 1;
    }
    // ca.pem and ca-key.pem (0600).
    if (auto st = cluster::write_peer_credentials(out, "ca", *ca, *ca); !st.ok()) {
        std::fprintf(stderr, "assistd peer-cert ca: %s\n", st.error().message.c_str());
        return 1;
    }
    std::printf("%s/ca.pem: the fleet's CA (give it to every node as --peer-tls-ca)\n"
                "%s/ca-key.pem: its key (keep it off the nodes)\n",
                out.c_str(), out.c_str());
    return 0;
}

int issue(const std::string& ca_dir, const std::string& node, const std::string& out, int days) {
    cluster::PemCredentials ca;
    const std::filesystem::path dir(ca_dir);
    if (!read_text(dir / "ca.pem", ca.cert) || !read_text(dir / "ca-key.pem", ca.key)) {
        std::fprintf(stderr, "assistd peer-cert issue: --ca %s must hold ca.pem and ca-key.pem "
                             "(made by `assistd peer-cert ca`)\n",
                     ca_dir.c_str());
        return 2;
    }
    auto cert = cluster::make_peer_certificate(ca, node, days);
    if (!cert.ok()) {
        std::fprintf(stderr, "assistd peer-cert issue: --node %s: %s\n", node.c_str(),
                     cert.error().message.c_str());
        return 2;
    }
    if (auto st = cluster::write_peer_credentials(out, "node", ca, *cert); !st.ok()) {
        std::fprintf(stderr, "assistd peer-cert issue: %s\n", st.error().message.c_str());
        return 1;
    }
    auto checked = cluster::check_peer_tls_files({out + "/node.pem", out + "/node-key.pem", out + "/ca.pem"});
    if (!checked.ok()) {
        std::fprintf(stderr, "assistd peer-cert issue: %s\n", checked.error().message.c_str());
        return 1;
    }
    std::printf("node %s: --peer-tls-cert %s/node.pem --peer-tls-key %s/node-key.pem --peer-tls-ca %s/ca.pem\n",
                node.c_str(), out.c_str(), out.c_str(), out.c_str());
    return 0;
}

}  // namespace

void register_peer_cert(CLI::App& app, int& exit_code) {
    CLI::App* cmd = app.add_subcommand("peer-cert", "Certificates for mutual TLS between a fleet's peers");
    cmd->require_subcommand(1);
    struct Options {
        std::string out, ca, node;
        int days = 365;
    };
    auto o = std::make_shared<Options>();
    CLI::App* ca = cmd->add_subcommand("ca", "Make a fleet CA: OUT/ca.pem and OUT/ca-key.pem");
    ca->add_option("--out", o->out, "Directory to write into")->required();
    ca->add_option("--days", o->days, "Validity in days")->capture_default_str()->check(CLI::Range(1, 36500));
    ca->callback([o, &exit_code] { exit_code = make_ca(o->out, o->days); });
    CLI::App* is = cmd->add_subcommand("issue", "Issue a node's certificate (URI SAN assistd-node:NAME)");
    is->add_option("--ca", o->ca, "Directory of `peer-cert ca`")->required();
    is->add_option("--node", o->node, "The node's name, as its --node-id (hex id or pod name)")->required();
    is->add_option("--out", o->out, "Directory for node.pem, node-key.pem and ca.pem")->required();
    is->add_option("--days", o->days, "Validity in days")->capture_default_str()->check(CLI::Range(1, 36500));
    is->callback([o, &exit_code] { exit_code = issue(o->ca, o->node, o->out, o->days); });
}

}  // namespace assistd::cli
