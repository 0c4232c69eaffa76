#pragma once
// A file's bytes, whole or its first `limit` of them: the KV disk tier and
// the standby KV store read their files (and headers) through this.
#include <cstddef>
#include <string>

namespace assistd::serve {

// False when the file cannot be opened or read.
bool read_file_bytes(const std::string& path, std::string& out, size_t limit = static_cast<size_t>(-1));

}  // namespace assistd::serve
