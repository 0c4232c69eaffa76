// GGUF reader against files made by our writer: metadata of every type,
// tensors, alignment, and the conversions between float formats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/dtype.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"

namespace assistd::engine {
namespace {

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
}

TEST(Gguf, RoundTripsMetadataAndTensors) {
    GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 5);
    w.set_i32("some.negative", -3);
    w.set_u64("big", 1ull << 40);
    w.set_f32("llama.rope.freq_base", 10000.f);
    w.set_bool("flag", true);
    w.set_string_array("tokenizer.ggml.tokens", {"<s>", "</s>", "▁hello"});
    w.set_f32_array("tokenizer.ggml.scores", {0.f, -1.5f, 2.25f});
    w.set_i32_array("tokenizer.ggml.token_type", {3, 3, 1});
    w.add_tensor("a", DType::F32, {3, 2}, f32_bytes({1, 2, 3, 4, 5, 6}));
    w.add_tensor("b", DType::F32, {5}, f32_bytes({7, 8, 9, 10, 11}));
    for (uint32_t version : {2u, 3u}) {
        const auto bytes = w.to_bytes(version);
        auto f = GgufFile::parse(bytes, "mem");
        ASSERT_TRUE(f.ok()) << f.error().message;
        EXPECT_EQ((*f)->version(), version);
        EXPECT_EQ((*f)->get_string("general.architecture"), "llama");
        EXPECT_EQ((*f)->get_uint("llama.block_count"), 5u);
        EXPECT_EQ((*f)->get_int("some.negative"), -3);
        EXPECT_FALSE((*f)->get_uint("some.negative").has_value());
        EXPECT_EQ((*f)->get_uint("big"), 1ull << 40);
        EXPECT_EQ((*f)->get_float("llama.rope.freq_base"), 10000.0);
        EXPECT_EQ((*f)->get_bool("flag"), true);
        const GgufArray* toks = (*f)->get_array("tokenizer.ggml.tokens");
        ASSERT_NE(toks, nullptr);
        ASSERT_EQ(toks->strings.size(), 3u);
        EXPECT_EQ(toks->strings[2], "▁hello");
        const GgufArray* scores = (*f)->get_array("tokenizer.ggml.scores");
        ASSERT_NE(scores, nullptr);
        EXPECT_EQ(GgufFile::array_float(*scores, 1), -1.5);
        EXPECT_EQ(GgufFile::array_int(*(*f)->get_array("tokenizer.ggml.token_type"), 0), 3);
        const GgufTensor* a = (*f)->tensor("a");
        ASSERT_NE(a, nullptr);
        EXPECT_EQ(a->cols(), 3u);
        EXPECT_EQ(a->rows(), 2u);
        EXPECT_EQ(static_cast<const float*>(a->data)[5], 6.f);
        const GgufTensor* b = (*f)->tensor("b");
        ASSERT_NE(b, nullptr);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data) % 32, reinterpret_cast<uintptr_t>(a->data) % 32);
        EXPECT_EQ(static_cast<const float*>(b->data)[4], 11.f);
        EXPECT_EQ((*f)->tensor("missing"), nullptr);
    }
}

TEST(Gguf, RejectsHostileHeaders) {
    GgufWriter w;
    w.set_string("k", "v");
    // 8 floats fill the 32-byte alignment exactly: the file ends where the data ends.
    w.add_tensor("t", DType::F32, {8}, f32_bytes({1, 2, 3, 4, 5, 6, 7, 8}));
    auto bytes = w.to_bytes();
    // Every truncation is an error, never a crash.
    for (size_t n = 0; n < bytes.size(); ++n) {
        std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
        auto f = GgufFile::parse(cut, "cut");
        EXPECT_FALSE(f.ok()) << "truncated at " << n;
    }
    // A string length pointing far beyond the file.
    auto bad = bytes;
    const uint64_t huge = 1ull << 50;
    std::memcpy(bad.data() + 24, &huge, 8);
    auto f = GgufFile::parse(bad, "bad");
    ASSERT_FALSE(f.ok());
    EXPECT_NE(f.error().message.find("string"), std::string::npos);
}

TEST(Dtype, HalfConversionsAreExactWhereRepresentable) {
    for (float v : {0.f, -0.f, 1.f, -2.5f, 65504.f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f}) {
        EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(v)), v) << v;
    }
    EXPECT_TRUE(std::isinf(fp16_to_fp32(fp32_to_fp16(1e6f))));
    EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(std::nanf("")))));
    // Round to nearest even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
    EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(1.f + 0x1p-11f)), 1.f);
    EXPECT_EQ(fp16_to_fp32(fp32_to_fp16(1.f + 3 * 0x1p-11f)), 1.f + 0x1p-9f);
    // Every half value survives half -> float -> half.
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff)) continue;  // NaN payloads
        EXPECT_EQ(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))), h) << h;
    }
}

TEST(Dtype, Bf16RoundsToNearestEven) {
    EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.f)), 1.f);
    EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.f + 0x1p-8f)), 1.f);  // tie -> even
    EXPECT_EQ(bf16_to_fp32(fp32_to_bf16(1.f + 3 * 0x1p-8f)), 1.f + 0x1p-6f);
    EXPECT_TRUE(std::isnan(bf16_to_fp32(fp32_to_bf16(std::nanf("")))));
}

TEST(Dtype, Q8RoundTripIsClose) {
    std::vector<float> x(64);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i)) * 3.f;
    std::vector<BlockQ8_0> q(2);
    quantize_row(DType::Q8_0, x.data(), q.data(), 64);
    std::vector<float> y(64);
    dequantize_row(DType::Q8_0, q.data(), y.data(), 64);
    for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 3.f / 127.f);
}

TEST(Dtype, NamesOfUnsupportedTypes) {
    EXPECT_EQ(ggml_type_name(12), "Q4_K");
    EXPECT_FALSE(dtype_from_ggml(12).has_value());
    EXPECT_EQ(dtype_from_ggml(30), DType::BF16);
}

}  // namespace
}  // namespace assistd::engine
