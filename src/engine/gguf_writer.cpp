#include "engine/gguf_writer.h"

#include <fmt/format.h>

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
    tensors_.push_back({std::string(name), ggml_type, std::move(dims), std::move(data)});
}

std::vector<uint8_t> GgufWriter::to_bytes(uint32_t version) const {
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
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
        append_string(out, t.name);
        append<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
        for (uint64_t d : t.dims) append<uint64_t>(out, d);
        append<uint32_t>(out, t.ggml_type);
        append<uint64_t>(out, offset);
        offsets.push_back(offset);
        offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
    }
    out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, 0);
    const size_t data_start = out.size();
    out.resize(data_start + offset, 0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
        if (!tensors_[i].data.empty())
            std::memcpy(out.data() + data_start + offsets[i], tensors_[i].data.data(), tensors_[i].data.size());
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

}  // namespace assistd::engine
