// `assistd bench engine --decode-context` as a process: decode timed after a
// cached history, and the options it rejects with a clear message.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

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

}  // namespace
