#pragma once
// GGUF v2/v3 reader over a read-only mmap. Metadata strings and tensor data
// point into the mapping (zero copy), so opening a file costs a header parse.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"
#include "engine/dtype.h"

namespace assistd::engine {

enum class GgufValueType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
    BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// One metadata value. Integers of every width are held as int64/uint64,
// floats as double; arrays keep their element type and count and point into
// the mapping (strings of an array are indexed once at open).
struct GgufArray {
    GgufValueType elem_type = GgufValueType::UINT8;
    uint64_t count = 0;
    const uint8_t* data = nullptr;          // packed elements (non-string arrays)
    std::vector<std::string_view> strings;  // string arrays only
};

struct GgufValue {
    GgufValueType type = GgufValueType::UINT8;
    std::variant<uint64_t, int64_t, double, bool, std::string_view, GgufArray> v;
};

struct GgufTensor {
    std::string name;
    uint32_t ggml_type = 0;
    DType dtype = DType::F32;           // valid when supported
    bool supported = false;
    std::vector<uint64_t> dims;         // dims[0] is the innermost (row length)
    uint64_t n_elements = 0;
    uint64_t offset = 0;                // relative to the data section
    size_t n_bytes = 0;
    const void* data = nullptr;         // into the mapping

    uint64_t rows() const { uint64_t r = 1; for (size_t i = 1; i < dims.size(); ++i) r *= dims[i]; return r; }
    uint64_t cols() const { return dims.empty() ? 0 : dims[0]; }
};

class GgufFile {
public:
    // Opens and validates the whole header and tensor table. Any problem
    // (missing file, not GGUF, truncated, corrupt) comes back as a message.
    static Result<std::unique_ptr<GgufFile>> open(const std::string& path);
    // Parses an in-memory image (for fuzzing and tests); `bytes` must outlive the file.
    static Result<std::unique_ptr<GgufFile>> parse(std::span<const uint8_t> bytes, std::string name);
    ~GgufFile();
    GgufFile(const GgufFile&) = delete;
    GgufFile& operator=(const GgufFile&) = delete;

    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    const std::string& path() const { return path_; }
    size_t file_size() const { return size_; }

    const std::map<std::string, GgufValue, std::less<>>& metadata() const { return kv_; }
    const GgufValue* find(std::string_view key) const;

    // Typed getters: nullopt when absent or of a non-convertible type.
    std::optional<std::string_view> get_string(std::string_view key) const;
    std::optional<uint64_t> get_uint(std::string_view key) const;
    std::optional<int64_t> get_int(std::string_view key) const;
    std::optional<double> get_float(std::string_view key) const;
    std::optional<bool> get_bool(std::string_view key) const;
    const GgufArray* get_array(std::string_view key) const;
    // Numeric array element i as double / int64 (for scores, token types, ...).
    static double array_float(const GgufArray& a, uint64_t i);
    static int64_t array_int(const GgufArray& a, uint64_t i);

    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* tensor(std::string_view name) const;

private:
    GgufFile() = default;
    Status parse_header();

    std::string path_;
    const uint8_t* base_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
    uint32_t version_ = 0;
    uint32_t alignment_ = 32;
    std::map<std::string, GgufValue, std::less<>> kv_;
    std::vector<GgufTensor> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace assistd::engine
