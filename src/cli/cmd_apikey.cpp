// `assistd apikey new` makes a random API key and prints it with its SHA-256
// and the --api-key entry for the server; `assistd apikey hash` prints the
// SHA-256 of a key given as an argument or on standard input. The server's
// configuration only ever holds the hash.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "serve/auth.h"

namespace assistd::cli {
namespace {

struct ApiKeyOptions {
    std::string tenant = "default";
    std::string key;  // hash: empty reads standard input
};

int run_new(const ApiKeyOptions& o) {
    // The tenant is checked the way the server will check the entry.
    const std::string probe = "sha256=" + std::string(64, '0') + ",tenant=" + o.tenant;
    if (auto ok = serve::parse_api_key_spec(probe); !ok) {
        std::fprintf(stderr, "assistd apikey new: --tenant: %s\n", ok.error().message.c_str());
        return 2;
    }
    auto key = serve::generate_api_key();
    if (!key) {
        std::fprintf(stderr, "assistd apikey new: %s\n", key.error().message.c_str());
        return 1;
    }
    const std::string hash = serve::sha256_hex(*key);
    std::printf("key     %s\n", key->c_str());
    std::printf("sha256  %s\n", hash.c_str());
    std::printf("flag    --api-key sha256=%s,tenant=%s\n", hash.c_str(), o.tenant.c_str());
    std::fprintf(stderr,
                 "assistd apikey new: give the key to the client once; the server keeps only its sha256 "
                 "(add requests-per-minute=, tokens-per-minute=, precision= to the entry as needed)\n");
    return 0;
}

int run_hash(const ApiKeyOptions& o) {
    std::string key = o.key;
    if (key.empty()) {
        key.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
        // One trailing line end is the terminal's, not the key's.
        if (!key.empty() && key.back() == '\n') key.pop_back();
        if (!key.empty() && key.back() == '\r') key.pop_back();
    }
    if (key.empty()) {
        std::fprintf(stderr, "assistd apikey hash: no key: give it as an argument or on standard input\n");
        return 2;
    }
    std::printf("%s\n", serve::sha256_hex(key).c_str());
    return 0;
}

}  // namespace

void register_apikey(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<ApiKeyOptions>();
    CLI::App* cmd = app.add_subcommand("apikey", "Make API keys and the hashes `serve --api-key` takes");
    cmd->require_subcommand(1);
    CLI::App* make = cmd->add_subcommand("new", "Print a fresh random key, its sha256 and the --api-key entry");
    make->add_option("--tenant", o->tenant, "Tenant the key belongs to")->capture_default_str();
    make->callback([o, &exit_code] { exit_code = run_new(*o); });
    CLI::App* hash = cmd->add_subcommand("hash", "Print the sha256 of a key (argument, or standard input)");
    hash->add_option("key", o->key, "The key (omit it to read standard input and keep it out of shell history)");
    hash->callback([o, &exit_code] { exit_code = run_hash(*o); });
}

}  // namespace assistd::cli
