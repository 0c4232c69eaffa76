// libFuzzer: the two parsers of API-key text, an operator's key spec
// (--api-key / YAML) and a client's Authorization header. A spec that parses
// holds a valid tenant and limits, writes back as a canonical spec that parses
// to the same key, and finds only the key whose SHA-256 it holds. A bearer
// token is a non-empty, blank-free piece of the header that reads back the same.
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "serve/auth.h"

using namespace assistd;
using serve::ApiKeyConfig;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

bool valid_tenant(std::string_view t) {
    if (t.empty() || t.size() > serve::kMaxTenantNameLength) return false;
    for (char c : t)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    return true;
}

bool valid_limit(double v) {
    return std::isfinite(v) && (v == 0 || v >= 1);
}

std::string number(double v) {
    char buf[64];
    const auto r =
        std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
    return std::string(buf, r.ptr);
}

std::string canonical_spec(const ApiKeyConfig& k) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string spec = "sha256=";
    for (uint8_t b : k.hash) {
        spec += kHex[b >> 4];
        spec += kHex[b & 0xF];
    }
    spec += ",tenant=" + k.tenant;
    if (k.requests_per_minute != 0) spec += ",requests-per-minute=" + number(k.requests_per_minute);
    if (k.tokens_per_minute != 0) spec += ",tokens-per-minute=" + number(k.tokens_per_minute);
    if (k.default_precision)
        spec += std::string(",precision=") + engine::precision_name(*k.default_precision);
    return spec;
}

void check_key_spec(std::string_view text) {
    auto key = serve::parse_api_key_spec(text);
    if (!key.ok()) {
        check(key.error().code == ErrorCode::kInvalidArgument && !key.error().message.empty());
        return;
    }
    check(valid_tenant(key->tenant));
    check(valid_limit(key->requests_per_minute) && valid_limit(key->tokens_per_minute));
    check(!key->default_precision || *key->default_precision != engine::Precision::kNative);

    auto again = serve::parse_api_key_spec(canonical_spec(*key));
    check(again.ok());
    check(again->hash == key->hash && again->tenant == key->tenant);
    check(again->requests_per_minute == key->requests_per_minute);
    check(again->tokens_per_minute == key->tokens_per_minute);
    check(again->default_precision == key->default_precision);

    check(!serve::ApiKeyTable::create({*key, *again}).ok());  // the same hash twice
    auto table = serve::ApiKeyTable::create({*key});
    check(table.ok() && table->tenants() == std::vector<std::string>{key->tenant});
    check(table->find(text).has_value() == (serve::sha256(text) == key->hash));
    // Beside a key made for this very text, that key is the one found.
    ApiKeyConfig own;
    own.hash = serve::sha256(text);
    own.tenant = "own";
    if (own.hash != key->hash) {
        auto both = serve::ApiKeyTable::create({*key, own});
        check(both.ok() && both->find(text) == size_t{1});
    }
}

bool blank(char c) {
    return c == ' ' || c == '\t';
}

void check_bearer(std::string_view header) {
    const auto token = serve::bearer_token(header);
    if (!token) return;
    check(!token->empty());
    for (char c : *token) check(!blank(c));
    // A view into the header itself, never a copy that could dangle.
    check(token->data() >= header.data() &&
          token->data() + token->size() <= header.data() + header.size());
    const std::string again = "Bearer " + std::string(*token);
    check(serve::bearer_token(again) == std::string_view(again).substr(7));
    std::string shouted(header);
    for (char& c : shouted) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
    const auto loud = serve::bearer_token(shouted);  // the scheme's case does not matter
    check(loud.has_value() && loud->size() == token->size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    check_key_spec(text);
    check_bearer(text);
    return 0;
}
