#pragma once
// API keys and tenants. Operators configure keys by their SHA-256 (never the
// key itself); each key names a tenant and may carry per-key limits and the
// precision the tenant's requests run at when they pin none. A server with no
// keys is open: every caller is the tenant "".
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "engine/engine.h"

namespace assistd::serve {

inline constexpr size_t kMaxTenantNameLength = 64;

using Sha256Digest = std::array<uint8_t, 32>;

// The lower-case hex SHA-256 of `data` (OpenSSL libcrypto).
std::string sha256_hex(std::string_view data);
Sha256Digest sha256(std::string_view data);

// A fresh key: "sk-assistd-" and 64 hex digits from 32 random bytes (OpenSSL's CSPRNG).
Result<std::string> generate_api_key();

struct ApiKeyConfig {
    Sha256Digest hash{};
    std::string tenant;                                  // [A-Za-z0-9_.-], 1..64 characters
    double requests_per_minute = 0;                      // 0: no limit
    double tokens_per_minute = 0;                        // prompt + completion tokens; 0: no limit
    std::optional<engine::Precision> default_precision;  // fp32, fp16 or bf16
};

// One key from its text form, the same in a flag and in YAML:
//   "sha256=<64 hex>,tenant=acme,requests-per-minute=60,tokens-per-minute=40000,precision=fp16"
// sha256 and tenant are required. Errors say which field is wrong and how.
Result<ApiKeyConfig> parse_api_key_spec(std::string_view spec);

// "Authorization: Bearer <key>" → the key; nullopt when the header is absent
// or not of that form.
std::optional<std::string_view> bearer_token(std::string_view authorization);

// A request's Authorization fields (names compare case-insensitively): none,
// one (its value), or several. Several are refused, never authenticated by
// whichever one a reader happens to take: the request says two things about
// who it is.
struct AuthorizationFields {
    size_t count = 0;
    std::string_view value;  // the only one's value when count == 1
};
AuthorizationFields authorization_fields(
    const std::vector<std::pair<std::string, std::string>>& headers);

// The configured keys. Lookup hashes the presented key and compares it with
// every configured hash in constant time, so timing tells nothing about
// which (if any) matched.
class ApiKeyTable {
public:
    ApiKeyTable() = default;
    // Rejects two keys with the same hash (the error names both positions, 1-based).
    static Result<ApiKeyTable> create(std::vector<ApiKeyConfig> keys);

    bool empty() const { return keys_.empty(); }
    size_t size() const { return keys_.size(); }
    // The index of the key whose hash matches; nullopt for an unknown key.
    std::optional<size_t> find(std::string_view presented_key) const;
    // The index of the key with this hash (a peer names keys by hash).
    std::optional<size_t> find_hash(const Sha256Digest& hash) const;
    const ApiKeyConfig& key(size_t index) const { return keys_[index]; }
    // Each tenant once, in configuration order.
    std::vector<std::string> tenants() const;

private:
    std::vector<ApiKeyConfig> keys_;
};

}  // namespace assistd::serve
