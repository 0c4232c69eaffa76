// `assistd serve` key configuration and `assistd apikey` as processes:
// bad entries stop the server at startup with status 2 and a message that
// names the problem; a good YAML list starts it with keys required.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "serve/auth.h"

namespace assistd::serve {
namespace {

const std::string kBinary = ASSISTD_BINARY;
const std::string kStories = std::string(ASSISTD_SHARED_DIR) + "/models/stories260K.gguf";

struct ProcessRun {
    int status = -1;
    std::string out, err;
};

// Runs `args` through the shell with `input` on standard input.
ProcessRun run(const std::string& args, const std::string& input = "") {
    const auto dir = std::filesystem::temp_directory_path();
    const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(std::rand());
    const auto in = dir / ("assistd-keys-in-" + tag), out = dir / ("assistd-keys-out-" + tag),
               err = dir / ("assistd-keys-err-" + tag);
    std::ofstream(in) << input;
    const std::string cmd = "timeout 60 " + kBinary + " " + args + " <" + in.string() + " >" + out.string() + " 2>" +
                            err.string();
    const int rc = std::system(cmd.c_str());
    ProcessRun r;
    r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    auto slurp = [](const std::filesystem::path& p) {
        std::ifstream f(p);
        std::stringstream ss;
        ss << f.rdbuf();
        return ss.str();
    };
    r.out = slurp(out);
    r.err = slurp(err);
    std::filesystem::remove(in);
    std::filesystem::remove(out);
    std::filesystem::remove(err);
    return r;
}

struct TempFile {
    explicit TempFile(const std::string& text) {
        path = std::filesystem::temp_directory_path() /
               ("assistd-keys-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()) + ".yaml");
        std::ofstream(path) << text;
    }
    ~TempFile() { std::filesystem::remove(path); }
    std::filesystem::path path;
};

const std::string kHashA = sha256_hex("key-a");
const std::string kHashB = sha256_hex("key-b");

void expect_startup_error(const std::string& args, const std::string& message) {
    // The keys are checked before the model is read, so no model is needed to see the error.
    const ProcessRun r = run("serve --model /nonexistent/model.gguf --port 0 " + args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << args << "\n" << r.err;
    EXPECT_EQ(r.err.find("nonexistent"), std::string::npos) << "stopped before the model: " << r.err;
}

TEST(ServeKeysConfig, BadEntriesStopTheServerWithStatus2) {
    expect_startup_error("--api-key sha256=abc,tenant=a", "api key 1: sha256 must be 64 hex digits");
    expect_startup_error("--api-key sha256=" + kHashA + ",tenant=a --api-key sha256=" + kHashB +
                             ",tenant=b,precision=fp8",
                         "api key 2: precision must be fp32, fp16 or bf16, not 'fp8'");
    expect_startup_error("--api-key sha256=" + kHashA + ",tenant=a --api-key sha256=" + kHashA + ",tenant=b",
                         "api keys 1 and 2 have the same sha256");
    expect_startup_error("--api-key sha256=" + kHashA, "api key 1: tenant is missing");
    expect_startup_error("--api-key key=key-a,tenant=a", "never the key itself");
}

TEST(ServeKeysConfig, YamlListOfMappingsIsCheckedTheSameWay) {
    TempFile bad("api-keys:\n  - sha256: " + kHashA + "\n    tenant: a\n  - sha256: " + kHashB +
                 "\n    tenant: b\n    requests-per-minute: lots\n");
    expect_startup_error("--config " + bad.path.string(), "api key 2: requests-per-minute must be 0");
    TempFile dup("api-key:\n  - sha256=" + kHashA + ",tenant=a\n  - sha256: " + kHashA + "\n    tenant: b\n");
    expect_startup_error("--config " + dup.path.string(), "api keys 1 and 2 have the same sha256");
    TempFile scalar_list("max-queue: [1, 2]\n");
    expect_startup_error("--config " + scalar_list.path.string(), "'max-queue' in");
}

TEST(ServeKeysConfig, GoodYamlKeysStartTheServerWithKeysRequired) {
    if (!std::filesystem::exists(kStories)) GTEST_SKIP() << "no " << kStories;
    TempFile good("api-keys:\n  - sha256: " + kHashA +
                  "\n    tenant: acme\n    requests-per-minute: 60\n    precision: fp16\n  - sha256=" + kHashB +
                  ",tenant=globex\n");
    int err_pipe[2];
    ASSERT_EQ(::pipe(err_pipe), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::dup2(err_pipe[1], 2);
        ::close(err_pipe[0]);
        ::execl(kBinary.c_str(), kBinary.c_str(), "serve", "--model", kStories.c_str(), "--port", "0", "--threads",
                "1", "--config", good.path.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(err_pipe[1]);
    std::string err;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    char buf[1024];
    while (err.find("API keys required") == std::string::npos && std::chrono::steady_clock::now() < until) {
        const ssize_t n = ::read(err_pipe[0], buf, sizeof buf);
        if (n <= 0) break;
        err.append(buf, static_cast<size_t>(n));
    }
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(err_pipe[0]);
    EXPECT_NE(err.find("API keys required: 2 keys for tenants acme, globex"), std::string::npos) << err;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << err;
}

TEST(ApiKeyCommand, HashReadsAnArgumentOrStandardInput) {
    const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    ProcessRun r = run("apikey hash abc");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, abc + "\n");
    r = run("apikey hash", "abc\n");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.out, abc + "\n") << "one trailing newline is not part of the key";
    r = run("apikey hash", "");
    EXPECT_EQ(r.status, 2);
    EXPECT_NE(r.err.find("no key"), std::string::npos) << r.err;
}

TEST(ApiKeyCommand, NewPrintsAKeyItsHashAndTheEntry) {
    const ProcessRun r = run("apikey new --tenant acme");
    ASSERT_EQ(r.status, 0) << r.err;
    std::istringstream lines(r.out);
    std::string label, key, hash, flag, entry;
    lines >> label >> key;
    EXPECT_EQ(label, "key");
    lines >> label >> hash;
    EXPECT_EQ(label, "sha256");
    lines >> label >> flag >> entry;
    EXPECT_EQ(label, "flag");
    EXPECT_EQ(flag, "--api-key");
    EXPECT_TRUE(key.starts_with("sk-assistd-")) << r.out;
    EXPECT_EQ(hash, sha256_hex(key));
    EXPECT_EQ(entry, "sha256=" + hash + ",tenant=acme");
    auto parsed = parse_api_key_spec(entry);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message;
    EXPECT_NE(run("apikey new").out.find("sk-assistd-"), std::string::npos);
    EXPECT_NE(run("apikey new").out, run("apikey new").out) << "every key is fresh";
    const ProcessRun bad = run("apikey new --tenant 'no spaces'");
    EXPECT_EQ(bad.status, 2);
    EXPECT_NE(bad.err.find("may only hold"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace assistd::serve
