#include "engine/dtype.h"

#include <algorithm>
#include <cmath>

namespace assistd::engine {

std::optional<DType> dtype_from_ggml(uint32_t t) {
    switch (t) {
        case 0: return DType::F32;
        case 1: return DType::F16;
        case 8: return DType::Q8_0;
        case 30: return DType::BF16;
        default: return std::nullopt;
    }
}

std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "f32";
        case DType::F16: return "f16";
        case DType::Q8_0: return "q8_0";
        case DType::BF16: return "bf16";
    }
    return "?";
}

std::optional<DType> dtype_from_name(std::string_view n) {
    if (n == "f32" || n == "fp32") return DType::F32;
    if (n == "f16" || n == "fp16") return DType::F16;
    if (n == "bf16") return DType::BF16;
    if (n == "q8_0") return DType::Q8_0;
    return std::nullopt;
}

std::string_view ggml_type_name(uint32_t t) {
    static constexpr std::string_view names[] = {
        "F32",  "F16",  "Q4_0", "Q4_1", "Q4_2(removed)", "Q4_3(removed)", "Q5_0", "Q5_1", "Q8_0",
        "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",          "Q6_K",          "Q8_K", "IQ2_XXS",
        "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32",
        "I64", "F64", "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0"};
    if (t < std::size(names)) return names[t];
    return "unknown";
}

size_t dtype_block_elems(DType t) { return t == DType::Q8_0 ? kQ8_0Block : 1; }

size_t dtype_block_bytes(DType t) {
    switch (t) {
        case DType::F32: return 4;
        case DType::F16: return 2;
        case DType::BF16: return 2;
        case DType::Q8_0: return sizeof(BlockQ8_0);
    }
    return 0;
}

float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        if (mant == 0) return fp32_from_bits(sign);
        // Subnormal: value = mant * 2^-24.
        float v = std::ldexp(static_cast<float>(mant), -24);
        return sign ? -v : v;
    }
    if (exp == 31) return fp32_from_bits(sign | 0x7f800000 | (mant << 13));
    return fp32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t fp32_to_fp16(float f) {
    const uint32_t x = fp32_to_bits(f);
    const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return sign | 0x7e00;            // NaN
    if (ax >= 0x477ff000) return sign | 0x7c00;           // overflows to inf
    if (ax < 0x38800000) {                                // subnormal or zero in half
        // Round mant*2^(e) to a multiple of 2^-24 with ties to even via float arithmetic.
        const float a = fp32_from_bits(ax);
        const float scaled = a * 16777216.0f;             // 2^24
        const float r = std::nearbyint(scaled);           // default rounding mode: ties to even
        return sign | static_cast<uint16_t>(r);
    }
    // Normal: rebias exponent, round mantissa 23 -> 10 bits, ties to even.
    uint32_t m = ax + 0xfff + ((ax >> 13) & 1);
    m -= (112u << 23);
    return sign | static_cast<uint16_t>(m >> 13);
}

void dequantize_row(DType t, const void* src, float* dst, size_t n) {
    switch (t) {
        case DType::F32:
            std::memcpy(dst, src, n * 4);
            return;
        case DType::F16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case DType::BF16: {
            auto* s = static_cast<const uint16_t*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        case DType::Q8_0: {
            auto* b = static_cast<const BlockQ8_0*>(src);
            for (size_t i = 0; i < n / kQ8_0Block; ++i) {
                const float d = fp16_to_fp32(b[i].d);
                for (size_t j = 0; j < kQ8_0Block; ++j) dst[i * kQ8_0Block + j] = d * b[i].qs[j];
            }
            return;
        }
    }
}

void quantize_row(DType t, const float* src, void* dst, size_t n) {
    switch (t) {
        case DType::F32:
            std::memcpy(dst, src, n * 4);
            return;
        case DType::F16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
            return;
        }
        case DType::BF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (size_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
            return;
        }
        case DType::Q8_0: {
            auto* b = static_cast<BlockQ8_0*>(dst);
            for (size_t i = 0; i < n / kQ8_0Block; ++i) {
                const float* x = src + i * kQ8_0Block;
                float amax = 0.f;
                for (size_t j = 0; j < kQ8_0Block; ++j) amax = std::max(amax, std::fabs(x[j]));
                const float d = amax / 127.f;
                const float id = d != 0.f ? 1.f / d : 0.f;
                b[i].d = fp32_to_fp16(d);
                for (size_t j = 0; j < kQ8_0Block; ++j)
                    b[i].qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
            }
            return;
        }
    }
}

}  // namespace assistd::engine
