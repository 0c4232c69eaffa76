#pragma once
// Writes GGUF v3 files: used by `assistd model random`, the tests (hand-made
// good and bad files) and the benchmarks. Keys keep insertion order.
//
// Big files stream: declare tensors with add_tensor_deferred() and call
// write_streaming() with a producer that fills one tensor at a time, so
// memory stays at about one tensor however large the model.
#include <cstdint>
#include <functional>
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

    // A tensor whose bytes come later from write_streaming()'s producer
    // (write() and to_bytes() store zeros for it).
    void add_tensor_deferred(std::string_view name, DType type, std::vector<uint64_t> dims);

    size_t tensor_count() const { return tensors_.size(); }

    std::vector<uint8_t> to_bytes(uint32_t version = 3) const;
    Status write(const std::string& path, uint32_t version = 3) const;

    // Fills `out` with the bytes of deferred tensor `index` (its position in
    // the order tensors were added); `out` is reused between calls.
    using TensorProducer = std::function<Status(size_t index, std::vector<uint8_t>& out)>;
    // Writes header, metadata and tensor table, then each tensor in order,
    // asking `produce` for deferred ones. The file is removed on any error.
    Status write_streaming(const std::string& path, const TensorProducer& produce, uint32_t version = 3) const;

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
        size_t n_bytes = 0;      // data.size(), or the size a deferred tensor will have
        bool deferred = false;
    };
    // Header, metadata, tensor table and padding up to the data section.
    std::vector<uint8_t> header_bytes(uint32_t version) const;
    size_t padded(size_t n) const { return (n + alignment_ - 1) / alignment_ * alignment_; }
    void put(std::string_view key, std::vector<uint8_t> encoded);
    std::vector<Entry> kv_;
    std::vector<Tensor> tensors_;
    uint32_t alignment_ = 32;
};

}  // namespace assistd::engine
