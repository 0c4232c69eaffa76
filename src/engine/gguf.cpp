#include "engine/gguf.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

namespace assistd::engine {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxDims = 4;
// Sanity bounds: a hostile header must not make us allocate unbounded memory.
constexpr uint64_t kMaxKv = 1u << 20;
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxStringLen = 1u << 30;

class Cursor {
public:
    Cursor(const uint8_t* p, size_t n) : p_(p), n_(n) {}
    size_t pos() const { return pos_; }
    bool need(uint64_t bytes) const { return bytes <= n_ - pos_; }

    template <typename T>
    Result<T> read(const char* what) {
        if (!need(sizeof(T)))
            return make_error(ErrorCode::kCorrupt,
                              fmt::format("truncated while reading {} at byte {}", what, pos_));
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    Result<std::string_view> read_string(const char* what) {
        auto len = read<uint64_t>(what);
        if (!len) return len.error();
        if (*len > kMaxStringLen || !need(*len))
            return make_error(ErrorCode::kCorrupt,
                              fmt::format("truncated or oversized string ({} bytes) in {} at byte {}",
                                          *len, what, pos_));
        std::string_view s(reinterpret_cast<const char*>(p_ + pos_), *len);
        pos_ += *len;
        return s;
    }

    Status skip(uint64_t bytes, const char* what) {
        if (!need(bytes))
            return make_error(ErrorCode::kCorrupt, fmt::format("truncated {} at byte {}", what, pos_));
        pos_ += bytes;
        return {};
    }
    const uint8_t* here() const { return p_ + pos_; }

private:
    const uint8_t* p_;
    size_t n_;
    size_t pos_ = 0;
};

size_t scalar_size(GgufValueType t) {
    switch (t) {
        case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
        case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
        case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
        case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
        default: return 0;
    }
}

Result<GgufValue> read_scalar(Cursor& c, GgufValueType t, const std::string& key) {
    GgufValue v;
    v.type = t;
    const char* what = "metadata value";
    switch (t) {
        case GgufValueType::UINT8: { auto r = c.read<uint8_t>(what); if (!r) return r.error(); v.v = uint64_t{*r}; break; }
        case GgufValueType::INT8: { auto r = c.read<int8_t>(what); if (!r) return r.error(); v.v = int64_t{*r}; break; }
        case GgufValueType::UINT16: { auto r = c.read<uint16_t>(what); if (!r) return r.error(); v.v = uint64_t{*r}; break; }
        case GgufValueType::INT16: { auto r = c.read<int16_t>(what); if (!r) return r.error(); v.v = int64_t{*r}; break; }
        case GgufValueType::UINT32: { auto r = c.read<uint32_t>(what); if (!r) return r.error(); v.v = uint64_t{*r}; break; }
        case GgufValueType::INT32: { auto r = c.read<int32_t>(what); if (!r) return r.error(); v.v = int64_t{*r}; break; }
        case GgufValueType::UINT64: { auto r = c.read<uint64_t>(what); if (!r) return r.error(); v.v = *r; break; }
        case GgufValueType::INT64: { auto r = c.read<int64_t>(what); if (!r) return r.error(); v.v = *r; break; }
        case GgufValueType::FLOAT32: { auto r = c.read<float>(what); if (!r) return r.error(); v.v = double{*r}; break; }
        case GgufValueType::FLOAT64: { auto r = c.read<double>(what); if (!r) return r.error(); v.v = *r; break; }
        case GgufValueType::BOOL: { auto r = c.read<uint8_t>(what); if (!r) return r.error(); v.v = *r != 0; break; }
        case GgufValueType::STRING: { auto r = c.read_string(what); if (!r) return r.error(); v.v = *r; break; }
        default:
            return make_error(ErrorCode::kCorrupt,
                              fmt::format("metadata key '{}' has unknown value type {}", key,
                                          static_cast<uint32_t>(t)));
    }
    return v;
}

}  // namespace

GgufFile::~GgufFile() {
    if (mapped_ && base_) munmap(const_cast<uint8_t*>(base_), size_);
}

Result<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return make_error(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                          fmt::format("cannot open model file '{}': {}", path, std::strerror(errno)));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error(ErrorCode::kInvalidArgument, fmt::format("'{}' is not a regular file", path));
    }
    if (st.st_size < 24) {
        ::close(fd);
        return make_error(ErrorCode::kCorrupt,
                          fmt::format("'{}' is not a GGUF file: only {} bytes long", path, st.st_size));
    }
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED)
        return make_error(ErrorCode::kIo, fmt::format("cannot map '{}': {}", path, std::strerror(errno)));
    std::unique_ptr<GgufFile> f(new GgufFile());
    f->path_ = path;
    f->base_ = static_cast<const uint8_t*>(p);
    f->size_ = static_cast<size_t>(st.st_size);
    f->mapped_ = true;
    if (auto s = f->parse_header(); !s)
        return make_error(s.error().code, fmt::format("{}: {}", path, s.error().message));
    return f;
}

Result<std::unique_ptr<GgufFile>> GgufFile::parse(std::span<const uint8_t> bytes, std::string name) {
    std::unique_ptr<GgufFile> f(new GgufFile());
    f->path_ = std::move(name);
    f->base_ = bytes.data();
    f->size_ = bytes.size();
    if (auto s = f->parse_header(); !s) return s.error();
    return f;
}

Status GgufFile::parse_header() {
    Cursor c(base_, size_);
    auto magic = c.read<uint32_t>("magic");
    if (!magic || *magic != kGgufMagic)
        return make_error(ErrorCode::kCorrupt, "not a GGUF file (bad magic; expected 'GGUF')");
    auto version = c.read<uint32_t>("version");
    if (!version) return version.error();
    version_ = *version;
    if (version_ != 2 && version_ != 3)
        return make_error(ErrorCode::kUnsupported,
                          fmt::format("GGUF version {} is not supported (only 2 and 3)", version_));
    auto n_tensors = c.read<uint64_t>("tensor count");
    if (!n_tensors) return n_tensors.error();
    auto n_kv = c.read<uint64_t>("metadata count");
    if (!n_kv) return n_kv.error();
    if (*n_tensors > kMaxTensors || *n_kv > kMaxKv)
        return make_error(ErrorCode::kCorrupt,
                          fmt::format("implausible header: {} tensors, {} metadata keys", *n_tensors, *n_kv));

    for (uint64_t i = 0; i < *n_kv; ++i) {
        auto key = c.read_string("metadata key");
        if (!key) return key.error();
        auto type = c.read<uint32_t>("metadata type");
        if (!type) return type.error();
        std::string k(*key);
        const auto t = static_cast<GgufValueType>(*type);
        GgufValue value;
        if (t == GgufValueType::ARRAY) {
            auto et = c.read<uint32_t>("array element type");
            if (!et) return et.error();
            auto count = c.read<uint64_t>("array length");
            if (!count) return count.error();
            GgufArray arr;
            arr.elem_type = static_cast<GgufValueType>(*et);
            arr.count = *count;
            if (arr.elem_type == GgufValueType::STRING) {
                if (*count > (size_ - c.pos()) / 8)
                    return make_error(ErrorCode::kCorrupt,
                                      fmt::format("array '{}' claims {} strings, more than the file holds", k, *count));
                arr.strings.reserve(*count);
                for (uint64_t j = 0; j < *count; ++j) {
                    auto s = c.read_string("array string");
                    if (!s) return make_error(s.error().code, fmt::format("in array '{}': {}", k, s.error().message));
                    arr.strings.push_back(*s);
                }
            } else {
                const size_t es = scalar_size(arr.elem_type);
                if (es == 0)
                    return make_error(ErrorCode::kCorrupt,
                                      fmt::format("array '{}' has unsupported element type {}", k, *et));
                if (*count > std::numeric_limits<uint64_t>::max() / es)
                    return make_error(ErrorCode::kCorrupt, fmt::format("array '{}' is too long", k));
                arr.data = c.here();
                if (auto s = c.skip(*count * es, "array data"); !s)
                    return make_error(ErrorCode::kCorrupt, fmt::format("array '{}': {}", k, s.error().message));
            }
            value.type = t;
            value.v = std::move(arr);
        } else {
            auto v = read_scalar(c, t, k);
            if (!v) return v.error();
            value = std::move(*v);
        }
        kv_[std::move(k)] = std::move(value);
    }

    if (auto a = get_uint("general.alignment")) {
        if (*a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20))
            return make_error(ErrorCode::kCorrupt, fmt::format("general.alignment {} is not a power of two", *a));
        alignment_ = static_cast<uint32_t>(*a);
    }

    tensors_.reserve(*n_tensors);
    for (uint64_t i = 0; i < *n_tensors; ++i) {
        GgufTensor t;
        auto name = c.read_string("tensor name");
        if (!name) return name.error();
        t.name = std::string(*name);
        auto nd = c.read<uint32_t>("tensor dimension count");
        if (!nd) return nd.error();
        if (*nd == 0 || *nd > kMaxDims)
            return make_error(ErrorCode::kCorrupt, fmt::format("tensor '{}' has {} dimensions", t.name, *nd));
        t.n_elements = 1;
        for (uint32_t d = 0; d < *nd; ++d) {
            auto dim = c.read<uint64_t>("tensor dimension");
            if (!dim) return dim.error();
            if (*dim == 0 || *dim > (1ull << 40) || t.n_elements > (1ull << 42) / *dim)
                return make_error(ErrorCode::kCorrupt, fmt::format("tensor '{}' has an implausible shape", t.name));
            t.dims.push_back(*dim);
            t.n_elements *= *dim;
        }
        auto type = c.read<uint32_t>("tensor type");
        if (!type) return type.error();
        t.ggml_type = *type;
        auto off = c.read<uint64_t>("tensor offset");
        if (!off) return off.error();
        t.offset = *off;
        if (auto dt = dtype_from_ggml(t.ggml_type)) {
            t.dtype = *dt;
            t.supported = true;
            if (t.dims[0] % dtype_block_elems(*dt) != 0)
                return make_error(ErrorCode::kCorrupt,
                                  fmt::format("tensor '{}' row length {} is not a multiple of the {} block size",
                                              t.name, t.dims[0], dtype_name(*dt)));
            t.n_bytes = dtype_row_bytes(*dt, t.n_elements);
        }
        if (tensor_index_.count(t.name))
            return make_error(ErrorCode::kCorrupt, fmt::format("tensor '{}' appears twice", t.name));
        tensor_index_[t.name] = tensors_.size();
        tensors_.push_back(std::move(t));
    }

    const size_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
    if (data_start > size_ && !tensors_.empty())
        return make_error(ErrorCode::kCorrupt, "truncated before the tensor data section");
    for (auto& t : tensors_) {
        if (t.offset % alignment_ != 0)
            return make_error(ErrorCode::kCorrupt,
                              fmt::format("tensor '{}' offset {} is not aligned to {}", t.name, t.offset, alignment_));
        if (!t.supported) continue;  // size unknown; the model loader names the type if it needs it
        if (t.offset > size_ - data_start || t.n_bytes > size_ - data_start - t.offset)
            return make_error(ErrorCode::kCorrupt,
                              fmt::format("tensor '{}' ({} bytes at offset {}) extends past the end of the file "
                                          "(file truncated?)", t.name, t.n_bytes, t.offset));
        t.data = base_ + data_start + t.offset;
    }
    return {};
}

const GgufValue* GgufFile::find(std::string_view key) const {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
}

std::optional<std::string_view> GgufFile::get_string(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (auto* s = std::get_if<std::string_view>(&v->v)) return *s;
    return std::nullopt;
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (auto* u = std::get_if<uint64_t>(&v->v)) return *u;
    if (auto* i = std::get_if<int64_t>(&v->v); i && *i >= 0) return static_cast<uint64_t>(*i);
    return std::nullopt;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (auto* i = std::get_if<int64_t>(&v->v)) return *i;
    if (auto* u = std::get_if<uint64_t>(&v->v); u && *u <= static_cast<uint64_t>(INT64_MAX))
        return static_cast<int64_t>(*u);
    return std::nullopt;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (auto* d = std::get_if<double>(&v->v)) return *d;
    if (auto* u = std::get_if<uint64_t>(&v->v)) return static_cast<double>(*u);
    if (auto* i = std::get_if<int64_t>(&v->v)) return static_cast<double>(*i);
    return std::nullopt;
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return std::nullopt;
    if (auto* b = std::get_if<bool>(&v->v)) return *b;
    return std::nullopt;
}

const GgufArray* GgufFile::get_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (!v) return nullptr;
    return std::get_if<GgufArray>(&v->v);
}

double GgufFile::array_float(const GgufArray& a, uint64_t i) {
    const uint8_t* p = a.data + i * scalar_size(a.elem_type);
    switch (a.elem_type) {
        case GgufValueType::FLOAT32: { float f; std::memcpy(&f, p, 4); return f; }
        case GgufValueType::FLOAT64: { double d; std::memcpy(&d, p, 8); return d; }
        default: return static_cast<double>(array_int(a, i));
    }
}

int64_t GgufFile::array_int(const GgufArray& a, uint64_t i) {
    const uint8_t* p = a.data + i * scalar_size(a.elem_type);
    switch (a.elem_type) {
        case GgufValueType::UINT8: case GgufValueType::BOOL: return *p;
        case GgufValueType::INT8: return static_cast<int8_t>(*p);
        case GgufValueType::UINT16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
        case GgufValueType::INT16: { int16_t v; std::memcpy(&v, p, 2); return v; }
        case GgufValueType::UINT32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
        case GgufValueType::INT32: { int32_t v; std::memcpy(&v, p, 4); return v; }
        case GgufValueType::UINT64: { uint64_t v; std::memcpy(&v, p, 8); return static_cast<int64_t>(v); }
        case GgufValueType::INT64: { int64_t v; std::memcpy(&v, p, 8); return v; }
        case GgufValueType::FLOAT32: { float f; std::memcpy(&f, p, 4); return static_cast<int64_t>(f); }
        case GgufValueType::FLOAT64: { double d; std::memcpy(&d, p, 8); return static_cast<int64_t>(d); }
        default: return 0;
    }
}

const GgufTensor* GgufFile::tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace assistd::engine
