#include "cluster/peer_certs.h"

#include "cluster/openssl_ptr.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>


namespace assistd::cluster {
namespace {

using ossl::BioPtr;
using ossl::KeyPtr;
using ossl::memory_bio;
using ossl::X509Ptr;

Error openssl_error(const std::string& what) {
    const unsigned long code = ERR_get_error();
    char text[256] = "unknown error";
    if (code != 0) ERR_error_string_n(code, text, sizeof(text));
    ERR_clear_error();
    return make_error(ErrorCode::kInternal, what + ": " + text);
}

std::string bio_text(BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<size_t>(n));
}

Result<std::string> cert_pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_X509(bio.get(), cert) != 1) return openssl_error("writing a certificate");
    return bio_text(bio.get());
}

Result<std::string> key_pem(EVP_PKEY* key) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
        return openssl_error("writing a private key");
    return bio_text(bio.get());
}

// A fresh certificate for `key`: random serial, valid from a minute ago (peers' clocks differ a
// little) for `valid_days`, subject CN = common_name.
Result<X509Ptr> new_certificate(EVP_PKEY* key, std::string_view common_name, int valid_days) {
    X509Ptr cert(X509_new());
    if (!cert) return openssl_error("X509_new");
    X509_set_version(cert.get(), 2);  // v3: extensions
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1) return openssl_error("a serial number");
    serial[0] &= 0x7f;  // positive
    BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(valid_days) * 86400);
    X509_set_pubkey(cert.get(), key);
    X509_NAME* name = X509_get_subject_name(cert.get());
    const std::string cn(common_name);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    return cert;
}

Status add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (!ext) return openssl_error("extension " + value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return {};
}

Result<KeyPtr> new_key() {
    KeyPtr key(EVP_EC_gen("P-256"));
    if (!key) return openssl_error("an ECDSA P-256 key");
    return key;
}

Result<PemCredentials> finish(X509* cert, EVP_PKEY* key, EVP_PKEY* signer) {
    if (X509_sign(cert, signer, EVP_sha256()) <= 0) return openssl_error("signing a certificate");
    auto c = cert_pem(cert);
    if (!c.ok()) return c.error();
    auto k = key_pem(key);
    if (!k.ok()) return k.error();
    return PemCredentials{*c, *k};
}

Status write_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        if (!out || !(out << text) || !out.flush())
            return make_error(ErrorCode::kIo, "cannot write " + path.string());
    }
    if (::chmod(path.c_str(), mode) != 0)
        return make_error(ErrorCode::kIo, "cannot set the mode of " + path.string());
    return {};
}

}  // namespace

Result<PemCredentials> make_peer_ca(std::string_view common_name, int valid_days) {
    auto key = new_key();
    if (!key.ok()) return key.error();
    auto cert = new_certificate(key->get(), common_name, valid_days);
    if (!cert.ok()) return cert.error();
    X509* c = cert->get();
    X509_set_issuer_name(c, X509_get_subject_name(c));
    for (const auto& [nid, value] :
         {std::pair{NID_basic_constraints, "critical,CA:TRUE"},
          std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
          std::pair{NID_subject_key_identifier, "hash"}}) {
        if (auto st = add_extension(c, c, nid, value); !st.ok()) return st.error();
    }
    return finish(c, key->get(), key->get());
}

Result<PemCredentials> make_peer_certificate(const PemCredentials& ca, std::string_view node_name,
                                             int valid_days) {
    if (auto id = node_id_from_name(std::string(node_name)); !id.ok()) return id.error();
    auto ca_cert_bio = memory_bio(ca.cert);
    X509Ptr ca_cert(PEM_read_bio_X509(ca_cert_bio.get(), nullptr, nullptr, nullptr));
    auto ca_key_bio = memory_bio(ca.key);
    KeyPtr ca_key(PEM_read_bio_PrivateKey(ca_key_bio.get(), nullptr, nullptr, nullptr));
    if (!ca_cert || !ca_key) return openssl_error("reading the CA");

    auto key = new_key();
    if (!key.ok()) return key.error();
    auto cert = new_certificate(key->get(), node_name, valid_days);
    if (!cert.ok()) return cert.error();
    X509* c = cert->get();
    X509_set_issuer_name(c, X509_get_subject_name(ca_cert.get()));
    const std::string san = "URI:" + std::string(kNodeUriPrefix) + std::string(node_name);
    for (const auto& [nid, value] :
         {std::pair{NID_basic_constraints, std::string("critical,CA:FALSE")},
          std::pair{NID_key_usage, std::string("critical,digitalSignature")},
          std::pair{NID_ext_key_usage, std::string("serverAuth,clientAuth")},
          std::pair{NID_subject_alt_name, san},
          std::pair{NID_authority_key_identifier, std::string("keyid:always")}}) {
        if (auto st = add_extension(c, ca_cert.get(), nid, value); !st.ok()) return st.error();
    }
    return finish(c, key->get(), ca_key.get());
}

Status write_peer_credentials(const std::string& dir, const std::string& stem,
                              const PemCredentials& ca, const PemCredentials& node) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return make_error(ErrorCode::kIo, "cannot create " + dir + ": " + ec.message());
    const std::filesystem::path d(dir);
    if (auto st = write_file(d / "ca.pem", ca.cert, 0644); !st.ok()) return st;
    if (auto st = write_file(d / (stem + ".pem"), node.cert, 0644); !st.ok()) return st;
    return write_file(d / (stem + "-key.pem"), node.key, 0600);
}

Result<std::vector<PeerTlsFiles>> make_throwaway_fleet(const std::string& dir,
                                                       const std::vector<std::string>& node_names,
                                                       int valid_days) {
    auto ca = make_peer_ca("assistd throwaway fleet CA", valid_days);
    if (!ca.ok()) return ca.error();
    std::vector<PeerTlsFiles> out;
    for (const auto& name : node_names) {
        auto cert = make_peer_certificate(*ca, name, valid_days);
        if (!cert.ok()) return cert.error();
        const std::string node_dir = (std::filesystem::path(dir) / name).string();
        if (auto st = write_peer_credentials(node_dir, "node", *ca, *cert); !st.ok())
            return st.error();
        out.push_back({node_dir + "/node.pem", node_dir + "/node-key.pem", node_dir + "/ca.pem"});
    }
    return out;
}

}  // namespace assistd::cluster
