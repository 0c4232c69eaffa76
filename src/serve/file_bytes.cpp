#include "serve/file_bytes.h"

#include <algorithm>
#include <fstream>

namespace assistd::serve {

bool read_file_bytes(const std::string& path, std::string& out, size_t limit) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    in.seekg(0, std::ios::end);
    const auto size = static_cast<size_t>(std::max<std::streamoff>(0, in.tellg()));
    in.seekg(0);
    out.resize(std::min(size, limit));
    return static_cast<bool>(in.read(out.data(), static_cast<std::streamsize>(out.size())));
}

}  // namespace assistd::serve
