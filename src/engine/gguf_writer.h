#pragma once
// Writes GGUF v3 files: used by `assistd model random`, the tests (hand-made
// good and bad files) and the benchmarks. Keys keep insertion order.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "engine/dtype.h"
#include "engine/gguf.h"

namespace assistd::engine {

class GgufWriter {
public:
    void set_u32(std::string_view key, uint32_t v);
    void set_i32(std::string_view key, int32_t v);
    void set_u64(std::string_view key, uint64_t v);
    void set_f32(std::string_view key, float v);
    void set_bool(std::string_view key, bool v);
    void set_string(std::string_view key, std::string_view v);
    void set_string_array(std::string_view key, const std::vector<std::string>& v);
    void set_f32_array(std::string_view key, const std::vector<float>& v);
    void set_i32_array(std::string_view key, const std::vector<int32_t>& v);

    // `data` holds the tensor in `type` (row-major; dims[0] innermost).
    void add_tensor(std::string_view name, DType type, std::vector<uint64_t> dims, std::vector<uint8_t> data);
    // Raw variant for tests that need unsupported GGML type ids.
    void add_tensor_raw(std::string_view name, uint32_t ggml_type, std::vector<uint64_t> dims,
                        std::vector<uint8_t> data);

    std::vector<uint8_t> to_bytes(uint32_t version = 3) const;
    Status write(const std::string& path, uint32_t version = 3) const;

private:
    struct Entry {
        std::string key;
        std::vector<uint8_t> encoded;  // type tag + value
    };
    struct Tensor {
        std::string name;
        uint32_t ggml_type;
        std::vector<uint64_t> dims;
        std::vector<uint8_t> data;
    };
    void put(std::string_view key, std::vector<uint8_t> encoded);
    std::vector<Entry> kv_;
    std::vector<Tensor> tensors_;
    uint32_t alignment_ = 32;
};

}  // namespace assistd::engine
