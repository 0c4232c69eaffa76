#include "serve/auth.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace assistd::serve {

namespace {

constexpr char kHex[] = "0123456789abcdef";

std::string to_hex(const uint8_t* bytes, size_t n) {
    std::string out(n * 2, '0');
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = kHex[bytes[i] >> 4];
        out[2 * i + 1] = kHex[bytes[i] & 0xF];
    }
    return out;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

Status valid_tenant(std::string_view t) {
    if (t.empty() || t.size() > kMaxTenantNameLength)
        return make_error(ErrorCode::kInvalidArgument,
                          "tenant must be 1 to " + std::to_string(kMaxTenantNameLength) + " characters long");
    for (char c : t) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.';
        if (!ok)
            return make_error(ErrorCode::kInvalidArgument,
                              "tenant '" + std::string(t) + "' may only hold letters, digits, '-', '_' and '.'");
    }
    return {};
}

Result<double> per_minute(std::string_view name, std::string_view value) {
    double v = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || !std::isfinite(v) || v < 0 || (v > 0 && v < 1))
        return make_error(ErrorCode::kInvalidArgument, std::string(name) +
                                                           " must be 0 (no limit) or a number of at least 1, not '" +
                                                           std::string(value) + "'");
    return v;
}

}  // namespace

Sha256Digest sha256(std::string_view data) {
    Sha256Digest d{};
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data());
    return d;
}

std::string sha256_hex(std::string_view data) {
    const Sha256Digest d = sha256(data);
    return to_hex(d.data(), d.size());
}

Result<std::string> generate_api_key() {
    uint8_t bytes[32];
    if (RAND_bytes(bytes, sizeof bytes) != 1)
        return make_error(ErrorCode::kInternal, "the system's random source failed; cannot make a key");
    std::string key = "sk-assistd-" + to_hex(bytes, sizeof bytes);
    OPENSSL_cleanse(bytes, sizeof bytes);
    return key;
}

Result<ApiKeyConfig> parse_api_key_spec(std::string_view spec) {
    ApiKeyConfig k;
    bool have_hash = false;
    while (!spec.empty()) {
        const size_t comma = spec.find(',');
        const std::string_view field = trim(spec.substr(0, comma));
        spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
        if (field.empty()) continue;
        const size_t eq = field.find('=');
        if (eq == std::string_view::npos)
            return make_error(ErrorCode::kInvalidArgument,
                              "'" + std::string(field) + "' is not name=value (fields: sha256, tenant, "
                                                         "requests-per-minute, tokens-per-minute, precision)");
        const std::string_view name = trim(field.substr(0, eq)), value = trim(field.substr(eq + 1));
        if (name == "sha256") {
            if (value.size() != 64)
                return make_error(ErrorCode::kInvalidArgument,
                                  "sha256 must be 64 hex digits (what `assistd apikey hash` prints), got " +
                                      std::to_string(value.size()) + " characters");
            for (size_t i = 0; i < 32; ++i) {
                const int hi = hex_value(value[2 * i]), lo = hex_value(value[2 * i + 1]);
                if (hi < 0 || lo < 0)
                    return make_error(ErrorCode::kInvalidArgument,
                                      "sha256 must be 64 hex digits (what `assistd apikey hash` prints); it holds '" +
                                          std::string(1, value[hi < 0 ? 2 * i : 2 * i + 1]) + "'");
                k.hash[i] = static_cast<uint8_t>(hi * 16 + lo);
            }
            have_hash = true;
        } else if (name == "tenant") {
            if (auto ok = valid_tenant(value); !ok.ok()) return ok.error();
            k.tenant = std::string(value);
        } else if (name == "requests-per-minute") {
            auto v = per_minute(name, value);
            if (!v) return v.error();
            k.requests_per_minute = *v;
        } else if (name == "tokens-per-minute") {
            auto v = per_minute(name, value);
            if (!v) return v.error();
            k.tokens_per_minute = *v;
        } else if (name == "precision") {
            auto p = engine::precision_from_name(value);
            if (!p || *p == engine::Precision::kNative)
                return make_error(ErrorCode::kInvalidArgument,
                                  "precision must be fp32, fp16 or bf16, not '" + std::string(value) + "'");
            k.default_precision = *p;
        } else if (name == "key") {
            return make_error(ErrorCode::kInvalidArgument,
                              "give the key's sha256 (from `assistd apikey hash`), never the key itself");
        } else {
            return make_error(ErrorCode::kInvalidArgument,
                              "unknown field '" + std::string(name) +
                                  "' (fields: sha256, tenant, requests-per-minute, tokens-per-minute, precision)");
        }
    }
    if (!have_hash)
        return make_error(ErrorCode::kInvalidArgument, "sha256 is missing (the output of `assistd apikey hash`)");
    if (k.tenant.empty()) return make_error(ErrorCode::kInvalidArgument, "tenant is missing");
    return k;
}

std::optional<std::string_view> bearer_token(std::string_view authorization) {
    authorization = trim(authorization);
    constexpr std::string_view kScheme = "bearer ";
    if (authorization.size() <= kScheme.size()) return std::nullopt;
    for (size_t i = 0; i < kScheme.size(); ++i) {
        const char c = authorization[i];
        if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kScheme[i]) return std::nullopt;
    }
    const std::string_view token = trim(authorization.substr(kScheme.size()));
    if (token.empty() || token.find_first_of(" \t") != std::string_view::npos) return std::nullopt;
    return token;
}

AuthorizationFields authorization_fields(
    const std::vector<std::pair<std::string, std::string>>& headers) {
    constexpr std::string_view kName = "authorization";
    AuthorizationFields found;
    for (const auto& [name, value] : headers) {
        if (name.size() != kName.size()) continue;
        bool same = true;
        for (size_t i = 0; i < kName.size() && same; ++i) {
            const char c = name[i];
            same = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == kName[i];
        }
        if (!same) continue;
        if (++found.count == 1) found.value = value;
    }
    if (found.count != 1) found.value = {};
    return found;
}

Result<ApiKeyTable> ApiKeyTable::create(std::vector<ApiKeyConfig> keys) {
    for (size_t i = 0; i < keys.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (keys[i].hash == keys[j].hash)
                return make_error(ErrorCode::kInvalidArgument, "api keys " + std::to_string(j + 1) + " and " +
                                                                   std::to_string(i + 1) +
                                                                   " have the same sha256: each key must be distinct");
    ApiKeyTable t;
    t.keys_ = std::move(keys);
    return t;
}

std::optional<size_t> ApiKeyTable::find(std::string_view presented_key) const {
    const Sha256Digest presented = sha256(presented_key);
    std::optional<size_t> found;
    // Every hash is compared, match or not, so the time does not depend on which one matched.
    for (size_t i = 0; i < keys_.size(); ++i)
        if (CRYPTO_memcmp(presented.data(), keys_[i].hash.data(), presented.size()) == 0) found = i;
    return found;
}

std::optional<size_t> ApiKeyTable::find_hash(const Sha256Digest& hash) const {
    for (size_t i = 0; i < keys_.size(); ++i)
        if (keys_[i].hash == hash) return i;
    return std::nullopt;
}

std::vector<std::string> ApiKeyTable::tenants() const {
    std::vector<std::string> out;
    for (const auto& k : keys_)
        if (std::find(out.begin(), out.end(), k.tenant) == out.end()) out.push_back(k.tenant);
    return out;
}

}  // namespace assistd::serve
