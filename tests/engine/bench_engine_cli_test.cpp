// `assistd bench engine` and `assistd bench membw` as processes: decode timed
// after a cached history, the memory probe's figures and checksum, decode's
// share of the probe's read bandwidth, and the options they reject with a
// clear message.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/memory_bandwidth.h"
#include "engine/random_model.h"
#include "reference_forward_helpers.h"

namespace {

struct Output {
    int status = -1;
    std::string text;  // stdout and stderr
};

Output run_assistd(const std::string& args) {
    Output out;
    const std::string command = std::string(ASSISTD_BINARY) + " " + args + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) return out;
    char buf[512];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.text.append(buf, n);
    const int status = ::pclose(pipe);
    out.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
}

class BenchEngineCli : public ::testing::Test {
  protected:
    void SetUp() override {
        auto spec = assistd::engine::random_model_shape("tiny-llama");
        ASSERT_TRUE(spec.has_value());
        model_ = dir_.file("tiny.gguf");
        auto s = assistd::engine::write_random_model(*spec, model_);
        ASSERT_TRUE(s.ok()) << s.error().message;
    }
    assistd::reftest::TempDir dir_;
    std::string model_;
};

TEST_F(BenchEngineCli, DecodesAfterTheRequestedCachedContext) {
    const Output out = run_assistd(
        "bench engine --model " + model_ +
        " --threads 1 --prompt-tokens 16 --gen-tokens 8 --reps 1 --decode-context 300 --json");
    ASSERT_EQ(out.status, 0) << out.text;
    const auto j = nlohmann::json::parse(out.text);
    EXPECT_EQ(j["decode_context"], 300);
    ASSERT_EQ(j["results"].size(), 1u);
    EXPECT_GT(j["results"][0]["decode_tokens_per_s"].get<double>(), 0.0);
}

TEST_F(BenchEngineCli, RejectsANegativeDecodeContext) {
    const Output out = run_assistd("bench engine --model " + model_ + " --decode-context -1");
    EXPECT_EQ(out.status, 2);
    EXPECT_NE(out.text.find("--decode-context must be >= 0"), std::string::npos) << out.text;
}

TEST_F(BenchEngineCli, RejectsADecodeContextBeyondTheContextSize) {
    const Output out = run_assistd("bench engine --model " + model_ +
                                   " --ctx-size 100 --decode-context 90 --gen-tokens 64");
    EXPECT_EQ(out.status, 2);
    EXPECT_NE(out.text.find("exceeds the context of 100 tokens; raise --ctx-size"),
              std::string::npos)
        << out.text;
}

// The sum the probe's read stream must report: its first array's bytes as
// 64-bit words, from the documented element values (independent of the probe).
uint64_t expected_read_checksum(size_t array_bytes) {
    uint64_t sum = 0;
    for (size_t i = 0; i < array_bytes / sizeof(float); i += 2) {
        const float pair[2] = {assistd::engine::memory_probe_element(i), assistd::engine::memory_probe_element(i + 1)};
        uint64_t word;
        std::memcpy(&word, pair, sizeof word);
        sum += word;
    }
    return sum;
}

TEST(BenchMembwCli, JsonHasEveryStreamAndTheVerifiedChecksum) {
    const Output out = run_assistd("bench membw --threads 2 --size-mib 16 --reps 2 --json");
    ASSERT_EQ(out.status, 0) << out.text;
    const auto j = nlohmann::json::parse(out.text);
    EXPECT_EQ(j["threads"], 2);
    EXPECT_EQ(j["array_mib"], 16);
    EXPECT_EQ(j["reps"], 2);
    EXPECT_EQ(j["huge_pages"], true);
    EXPECT_TRUE(j["kernels"].is_string());
    const double mib = 16.0 * 1024 * 1024;
    for (const auto& [stream, arrays] : {std::pair{"read", 1.0}, {"copy", 2.0}, {"triad", 3.0}}) {
        SCOPED_TRACE(stream);
        const auto& f = j[stream];
        EXPECT_GT(f["best_gb_per_s"].get<double>(), 0.0);
        EXPECT_GT(f["median_gb_per_s"].get<double>(), 0.0);
        EXPECT_LE(f["median_gb_per_s"].get<double>(), f["best_gb_per_s"].get<double>());
        EXPECT_EQ(f["bytes_per_pass"].get<double>(), arrays * mib);
    }
    EXPECT_EQ(j["checksum_verified"], true);
    EXPECT_EQ(j["read_checksum"].get<uint64_t>(), expected_read_checksum(16u << 20));
    EXPECT_EQ(j["expected_checksum"].get<uint64_t>(), expected_read_checksum(16u << 20));
    EXPECT_GT(j["seconds"].get<double>(), 0.0);
}

TEST(BenchMembwCli, TextNamesTheStreamsWithoutHugePagesToo) {
    const Output out = run_assistd("bench membw --threads 1 --size-mib 8 --reps 1 --huge-pages false");
    ASSERT_EQ(out.status, 0) << out.text;
    EXPECT_NE(out.text.find("1 thread, kernels"), std::string::npos) << out.text;
    EXPECT_NE(out.text.find("read (sum"), std::string::npos) << out.text;
    EXPECT_NE(out.text.find("triad a = b + s*c"), std::string::npos) << out.text;
    EXPECT_NE(out.text.find("equals the array's sum"), std::string::npos) << out.text;
}

TEST(BenchMembwCli, RejectsBadOptionsWithAClearMessage) {
    const std::pair<const char*, const char*> cases[] = {
        {"--threads -1", "--threads must be >= 1"},
        {"--size-mib 0", "--size-mib must be >= 1"},
        {"--reps 0", "--reps must be >= 1"},
        {"--size-mib 100000000", "more than three quarters of this machine's"},
        {"--size-mib lots", "--size-mib"},
        {"--huge-pages maybe", "--huge-pages"},
        {"--bogus", "--bogus"},
    };
    for (const auto& [args, message] : cases) {
        SCOPED_TRACE(args);
        const Output out = run_assistd(std::string("bench membw ") + args);
        EXPECT_EQ(out.status, 2) << out.text;
        EXPECT_NE(out.text.find(message), std::string::npos) << out.text;
    }
}

TEST_F(BenchEngineCli, MembwPrintsDecodesShareOfTheReadBandwidth) {
    Output out = run_assistd("bench engine --model " + model_ +
                             " --threads 2 --prompt-tokens 8 --gen-tokens 4 --reps 1 --precision fp32,bf16"
                             " --membw --membw-size-mib 16 --json");
    ASSERT_EQ(out.status, 0) << out.text;
    const auto j = nlohmann::json::parse(out.text);
    EXPECT_EQ(j["membw"]["threads"], 2);
    EXPECT_EQ(j["membw"]["array_mib"], 16);
    EXPECT_EQ(j["membw"]["passes_per_decode_run"], 3);
    ASSERT_EQ(j["results"].size(), 2u);
    for (const auto& r : j["results"]) {
        const double read = r["membw_read_gb_per_s"].get<double>();
        EXPECT_GT(read, 0.0);
        // The median decode GB/s over the median probe; with one decode run,
        // also that run's own ratio.
        const double share = r["decode_weight_gb_per_s"].get<double>() / read;
        EXPECT_NEAR(r["decode_share_of_membw_read"].get<double>(), share, 1e-9 * share);
        ASSERT_EQ(r["decode_share_run_by_run"].size(), 1u);
        EXPECT_NEAR(r["decode_share_run_by_run"][0].get<double>(), share, 1e-9 * share);
    }
    out = run_assistd("bench engine --model " + model_ +
                      " --threads 1 --prompt-tokens 8 --gen-tokens 4 --reps 2 --membw --membw-size-mib 8");
    ASSERT_EQ(out.status, 0) << out.text;
    EXPECT_NE(out.text.find("native: decode reads "), std::string::npos) << out.text;
    EXPECT_NE(out.text.find("read bandwidth measured now (medians of 2 decode runs, each followed by the "
                            "best of 3 read passes over 8 MiB, 1 thread; run by run "),
              std::string::npos)
        << out.text;
    // Without --membw there is no probe.
    out = run_assistd("bench engine --model " + model_ +
                      " --threads 1 --prompt-tokens 8 --gen-tokens 4 --reps 1 --json");
    ASSERT_EQ(out.status, 0) << out.text;
    const auto plain = nlohmann::json::parse(out.text);
    EXPECT_FALSE(plain.contains("membw"));
    EXPECT_FALSE(plain["results"][0].contains("decode_share_of_membw_read"));
}

TEST_F(BenchEngineCli, RejectsAnEmptyMembwProbe) {
    const Output out = run_assistd("bench engine --model " + model_ + " --membw --membw-size-mib 0");
    EXPECT_EQ(out.status, 2);
    EXPECT_NE(out.text.find("--membw-size-mib must be >= 1"), std::string::npos) << out.text;
}

}  // namespace
