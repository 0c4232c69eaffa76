#pragma once
// Tensor element types as GGUF numbers them, and scalar conversions between
// the float formats. The SIMD kernels have their own fast paths.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace assistd::engine {

enum class DType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
    BF16 = 30,
};

// Elements per block and bytes per block (1 and sizeof for plain floats).
constexpr size_t kQ8_0Block = 32;
struct BlockQ8_0 {
    uint16_t d;  // fp16 scale
    int8_t qs[kQ8_0Block];
};
static_assert(sizeof(BlockQ8_0) == 34);

std::optional<DType> dtype_from_ggml(uint32_t ggml_type);
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);  // "f32", "f16", "bf16", "q8_0"
// Name of any GGML type id, including the ones we do not support (for errors).
std::string_view ggml_type_name(uint32_t ggml_type);
size_t dtype_block_elems(DType t);
size_t dtype_block_bytes(DType t);
// Bytes for n elements (n must be a multiple of the block size).
inline size_t dtype_row_bytes(DType t, size_t n) { return n / dtype_block_elems(t) * dtype_block_bytes(t); }

inline float fp32_from_bits(uint32_t w) { float f; std::memcpy(&f, &w, 4); return f; }
inline uint32_t fp32_to_bits(float f) { uint32_t w; std::memcpy(&w, &f, 4); return w; }

// IEEE half <-> float, round to nearest even, with subnormals, inf and NaN.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);

inline float bf16_to_fp32(uint16_t h) { return fp32_from_bits(static_cast<uint32_t>(h) << 16); }
inline uint16_t fp32_to_bf16(float f) {
    uint32_t u = fp32_to_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((u >> 16) | 64);  // quiet NaN
    u += 0x7fff + ((u >> 16) & 1);  // round to nearest even
    return static_cast<uint16_t>(u >> 16);
}

// Converts n elements of type `src_type` at src into float.
void dequantize_row(DType src_type, const void* src, float* dst, size_t n);
// Converts n floats into `dst_type` (n a multiple of that type's block size).
void quantize_row(DType dst_type, const float* src, void* dst, size_t n);

}  // namespace assistd::engine
