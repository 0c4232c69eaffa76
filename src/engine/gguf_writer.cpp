#include "engine/gguf_writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace assistd::engine {
namespace {

template <typename T>
void append(std::vector<uint8_t>& out, T v) {
    const size_t at = out.size();
    out.resize(at + sizeof(T));
    std::memcpy(out.data() + at, &v, sizeof(T));
}

void append_string(std::vector<uint8_t>& out, std::string_view s) {
    append<uint64_t>(out, s.size());
    const size_t at = out.size();
    out.resize(at + s.size());
    if (!s.empty()) std::memcpy(out.data() + at, s.data(), s.size());
}

std::vector<uint8_t> tagged(GgufValueType t) {
    std::vector<uint8_t> out;
    append<uint32_t>(out, static_cast<uint32_t>(t));
    return out;
}

}  // namespace

void GgufWriter::put(std::string_view key, std::vector<uint8_t> encoded) {
    if (key == "general.alignment" && encoded.size() == 8) std::memcpy(&alignment_, encoded.data() + 4, 4);
    for (auto& e : kv_) {
        if (e.key == key) { e.encoded = std::move(encoded); return; }
    }
    kv_.push_back({std::string(key), std::move(encoded)});
}

void GgufWriter::set_u32(std::string_view key, uint32_t v) { auto e = tagged(GgufValueType::UINT32); append(e, v); put(key, std::move(e)); }
void GgufWriter::set_i32(std::string_view key, int32_t v) { auto e = tagged(GgufValueType::INT32); append(e, v); put(key, std::move(e)); }
void GgufWriter::set_u64(std::string_view key, uint64_t v) { auto e = tagged(GgufValueType::UINT64); append(e, v); put(key, std::move(e)); }
void GgufWriter::set_f32(std::string_view key, float v) { auto e = tagged(GgufValueType::FLOAT32); append(e, v); put(key, std::move(e)); }
void GgufWriter::set_bool(std::string_view key, bool v) { auto e = tagged(GgufValueType::BOOL); append<uint8_t>(e, v ? 1 : 0); put(key, std::move(e)); }
void GgufWriter::set_string(std::string_view key, std::string_view v) { auto e = tagged(GgufValueType::STRING); append_string(e, v); put(key, std::move(e)); }

void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string>& v) {
    auto e = tagged(GgufValueType::ARRAY);
    append<uint32_t>(e, static_cast<uint32_t>(GgufValueType::STRING));
    append<uint64_t>(e, v.size());
    for (const auto& s : v) append_string(e, s);
    put(key, std::move(e));
}

void GgufWriter::set_f32_array(std::string_view key, const std::vector<float>& v) {
    auto e = tagged(GgufValueType::ARRAY);
    append<uint32_t>(e, static_cast<uint32_t>(GgufValueType::FLOAT32));
    append<uint64_t>(e, v.size());
    for (float f : v) append(e, f);
    put(key, std::move(e));
}

void GgufWriter::set_i32_array(std::string_view key, const std::vector<int32_t>& v) {
    auto e = tagged(GgufValueType::ARRAY);
    append<uint32_t>(e, static_cast<uint32_t>(GgufValueType::INT32));
    append<uint64_t>(e, v.size());
    for (int32_t i : v) append(e, i);
    put(key, std::move(e));
}

void GgufWriter::add_tensor(std::string_view name, DType type, std::vector<uint64_t> dims, std::vector<uint8_t> data) {
    add_tensor_raw(name, static_cast<uint32_t>(type), std::move(dims), std::move(data));
}

void GgufWriter::add_tensor_raw(std::string_view name, uint32_t ggml_type, std::vector<uint64_t> dims,
                                std::vector<uint8_t> data) {
    const size_t n = data.size();
    tensors_.push_back({std::string(name), ggml_type, std::move(dims), std::move(data), n, false});
}

void GgufWriter::add_tensor_deferred(std::string_view name, DType type, std::vector<uint64_t> dims) {
    uint64_t n_elements = 1;
    for (uint64_t d : dims) n_elements *= d;
    const size_t n_bytes = dtype_row_bytes(type, n_elements);
    tensors_.push_back({std::string(name), static_cast<uint32_t>(type), std::move(dims), {}, n_bytes, true});
}

std::vector<uint8_t> GgufWriter::header_bytes(uint32_t version) const {
    std::vector<uint8_t> out;
    append<uint32_t>(out, 0x46554747);
    append<uint32_t>(out, version);
    append<uint64_t>(out, tensors_.size());
    append<uint64_t>(out, kv_.size());
    for (const auto& e : kv_) {
        append_string(out, e.key);
        const size_t at = out.size();
        out.resize(at + e.encoded.size());
        std::memcpy(out.data() + at, e.encoded.data(), e.encoded.size());
    }
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
        append_string(out, t.name);
        append<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
        for (uint64_t d : t.dims) append<uint64_t>(out, d);
        append<uint32_t>(out, t.ggml_type);
        append<uint64_t>(out, offset);
        offset += padded(t.n_bytes);
    }
    out.resize(padded(out.size()), 0);
    return out;
}

std::vector<uint8_t> GgufWriter::to_bytes(uint32_t version) const {
    std::vector<uint8_t> out = header_bytes(version);
    for (const auto& t : tensors_) {
        const size_t at = out.size();
        out.resize(at + padded(t.n_bytes), 0);
        if (!t.data.empty()) std::memcpy(out.data() + at, t.data.data(), t.data.size());
    }
    return out;
}

Status GgufWriter::write(const std::string& path, uint32_t version) const {
    const auto bytes = to_bytes(version);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return make_error(ErrorCode::kIo, fmt::format("cannot create '{}': {}", path, std::strerror(errno)));
    const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
    const bool ok = n == bytes.size() && std::fclose(f) == 0;
    if (!ok) return make_error(ErrorCode::kIo, fmt::format("cannot write '{}': {}", path, std::strerror(errno)));
    return {};
}

Status GgufWriter::write_streaming(const std::string& path, const TensorProducer& produce, uint32_t version) const {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return make_error(ErrorCode::kIo, fmt::format("cannot create '{}': {}", path, std::strerror(errno)));
    auto fail = [&](Error e) -> Status {
        std::fclose(f);
        std::remove(path.c_str());
        return e;
    };
    auto io_error = [&] { return make_error(ErrorCode::kIo, fmt::format("cannot write '{}': {}", path, std::strerror(errno))); };
    const std::vector<uint8_t> header = header_bytes(version);
    if (std::fwrite(header.data(), 1, header.size(), f) != header.size()) return fail(io_error());
    static constexpr uint8_t kZeros[64] = {};
    std::vector<uint8_t> buffer;
    for (size_t i = 0; i < tensors_.size(); ++i) {
        const Tensor& t = tensors_[i];
        const std::vector<uint8_t>* bytes = &t.data;
        if (t.deferred) {
            buffer.clear();
            if (auto s = produce(i, buffer); !s) return fail(s.error());
            if (buffer.size() != t.n_bytes)
                return fail(make_error(ErrorCode::kInternal,
                                       fmt::format("tensor '{}': producer gave {} bytes, expected {}", t.name,
                                                   buffer.size(), t.n_bytes)));
            bytes = &buffer;
        }
        if (!bytes->empty() && std::fwrite(bytes->data(), 1, bytes->size(), f) != bytes->size()) return fail(io_error());
        for (size_t pad = padded(t.n_bytes) - t.n_bytes; pad > 0;) {
            const size_t n = std::min(pad, sizeof(kZeros));
            if (std::fwrite(kZeros, 1, n, f) != n) return fail(io_error());
            pad -= n;
        }
    }
    if (std::fclose(f) != 0) {
        const Error e = io_error();
        std::remove(path.c_str());
        return e;
    }
    return {};
}

}  // namespace assistd::engine
