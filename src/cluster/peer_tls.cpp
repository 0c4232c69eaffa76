#include "cluster/peer_tls.h"

#include "cluster/openssl_ptr.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

namespace assistd::cluster {
namespace {

using ossl::KeyPtr;
using ossl::memory_bio;
using ossl::X509Ptr;

struct StoreFree {
    void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
    void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct NamesFree {
    void operator()(GENERAL_NAMES* n) const { GENERAL_NAMES_free(n); }
};

// Every certificate in a PEM text, in order.
std::vector<X509Ptr> read_certificates(std::string_view pem) {
    std::vector<X509Ptr> out;
    auto bio = memory_bio(pem);
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(x);
    ERR_clear_error();  // the read past the last certificate
    return out;
}

Result<std::string> read_file(const std::string& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(ErrorCode::kNotFound, std::string(what) + " " + path + " cannot be read");
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

Result<std::string> node_name_of_certificate(std::string_view cert_pem) {
    auto certs = read_certificates(cert_pem);
    if (certs.empty()) return make_error(ErrorCode::kCorrupt, "no PEM certificate found");
    std::unique_ptr<GENERAL_NAMES, NamesFree> names(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(certs.front().get(), NID_subject_alt_name, nullptr, nullptr)));
    std::vector<std::string> found;
    for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
        if (n->type != GEN_URI) continue;
        const auto* uri = n->d.uniformResourceIdentifier;
        std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                              static_cast<size_t>(ASN1_STRING_length(uri)));
        if (text.substr(0, kNodeUriPrefix.size()) == kNodeUriPrefix)
            found.emplace_back(text.substr(kNodeUriPrefix.size()));
    }
    if (found.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "the certificate names no node: it needs a URI subject alternative name "
                          "assistd-node:<node name>");
    if (found.size() > 1)
        return make_error(ErrorCode::kInvalidArgument,
                          "the certificate names " + std::to_string(found.size()) +
                              " nodes (assistd-node: URIs); a peer certificate names exactly one");
    if (auto id = node_id_from_name(found.front()); !id.ok())
        return make_error(ErrorCode::kInvalidArgument,
                          "the certificate's assistd-node name: " + id.error().message);
    return found.front();
}

Result<std::string> check_peer_tls_files(const PeerTlsFiles& files) {
    if (files.cert_path.empty() || files.key_path.empty() || files.ca_path.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "mutual TLS between peers needs all three of --peer-tls-cert, "
                          "--peer-tls-key and --peer-tls-ca");
    auto cert_pem = read_file(files.cert_path, "--peer-tls-cert");
    if (!cert_pem.ok()) return cert_pem.error();
    auto key_pem = read_file(files.key_path, "--peer-tls-key");
    if (!key_pem.ok()) return key_pem.error();
    auto ca_pem = read_file(files.ca_path, "--peer-tls-ca");
    if (!ca_pem.ok()) return ca_pem.error();

    auto chain = read_certificates(*cert_pem);
    if (chain.empty())
        return make_error(ErrorCode::kCorrupt, "--peer-tls-cert " + files.cert_path +
                                                   " holds no PEM certificate");
    auto cas = read_certificates(*ca_pem);
    if (cas.empty())
        return make_error(ErrorCode::kCorrupt,
                          "--peer-tls-ca " + files.ca_path + " holds no PEM certificate");
    auto key_bio = memory_bio(*key_pem);
    KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    ERR_clear_error();
    if (!key)
        return make_error(ErrorCode::kCorrupt, "--peer-tls-key " + files.key_path +
                                                   " holds no unencrypted PEM private key");
    if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
        ERR_clear_error();
        return make_error(ErrorCode::kInvalidArgument, "--peer-tls-key " + files.key_path +
                                                           " is not the key of --peer-tls-cert " +
                                                           files.cert_path);
    }

    std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
    for (auto& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
    STACK_OF(X509)* untrusted = sk_X509_new_null();
    for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
    std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
    X509_STORE_CTX_init(ctx.get(), store.get(), chain.front().get(), untrusted);
    const bool verified = X509_verify_cert(ctx.get()) == 1;
    const int verify_error = X509_STORE_CTX_get_error(ctx.get());
    sk_X509_free(untrusted);  // the certificates stay owned by `chain`
    ERR_clear_error();
    if (!verified)
        return make_error(ErrorCode::kInvalidArgument,
                          "--peer-tls-cert " + files.cert_path + " does not chain to --peer-tls-ca " +
                              files.ca_path + ": " + X509_verify_cert_error_string(verify_error));

    auto name = node_name_of_certificate(*cert_pem);
    if (!name.ok())
        return make_error(name.error().code,
                          "--peer-tls-cert " + files.cert_path + ": " + name.error().message);
    return name;
}

}  // namespace assistd::cluster
