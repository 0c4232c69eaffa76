#pragma once
// The chat page: static files served from one directory (--web-dir). Only
// regular files inside it; any path with a ".." segment, a backslash or a
// NUL is refused, and the resolved path must still lie inside the directory.
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "serve/http_server.h"

namespace assistd::serve {

class StaticFiles {
  public:
    explicit StaticFiles(std::filesystem::path root);

    // GET/HEAD of `path` ("/" is index.html): the file, or nullopt when the
    // path names nothing servable here (the caller answers 404).
    std::optional<HttpResponse> serve(std::string_view path) const;

    const std::filesystem::path& root() const { return root_; }

    static std::string content_type(const std::filesystem::path& file);

    // The first of `candidates` holding an index.html; empty if none does.
    static std::filesystem::path find_root(const std::vector<std::filesystem::path>& candidates);

  private:
    std::filesystem::path root_;  // canonical
};

}  // namespace assistd::serve
