#pragma once
// Fixed-width little-endian integers in byte strings: the KV blob, the
// standby KV run and the peers' KV frame all lay their headers out this way.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace assistd {

inline void put_le32(std::string& out, uint32_t v) {
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
    out.append(b, 4);
}
inline void put_le64(std::string& out, uint64_t v) {
    char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
    out.append(b, 8);
}
// The caller has checked that the bytes are there.
inline uint32_t get_le32(const char* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
    return v;
}
inline uint64_t get_le64(const char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
    return v;
}

}  // namespace assistd
