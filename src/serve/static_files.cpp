#include "serve/static_files.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <system_error>

namespace assistd::serve {

StaticFiles::StaticFiles(std::filesystem::path root) {
    std::error_code ec;
    root_ = std::filesystem::weakly_canonical(root, ec);
    if (ec) root_ = std::move(root);
}

std::string StaticFiles::content_type(const std::filesystem::path& file) {
    const std::string ext = file.extension().string();
    if (ext == ".html" || ext == ".htm") return "text/html; charset=utf-8";
    if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
    if (ext == ".css") return "text/css; charset=utf-8";
    if (ext == ".json") return "application/json";
    if (ext == ".svg") return "image/svg+xml";
    if (ext == ".png") return "image/png";
    if (ext == ".ico") return "image/x-icon";
    if (ext == ".txt") return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

std::filesystem::path StaticFiles::find_root(const std::vector<std::filesystem::path>& candidates) {
    for (const auto& c : candidates) {
        std::error_code ec;
        if (std::filesystem::is_regular_file(c / "index.html", ec)) return c;
    }
    return {};
}

std::optional<HttpResponse> StaticFiles::serve(std::string_view path) const {
    if (root_.empty() || path.empty() || path.front() != '/') return std::nullopt;
    std::string rel(path.substr(1));
    if (rel.empty()) rel = "index.html";
    if (rel.find('\\') != std::string::npos || rel.find('\0') != std::string::npos)
        return std::nullopt;
    // Refuse every ".." segment outright rather than trusting normalisation.
    for (size_t start = 0; start <= rel.size();) {
        const size_t end = std::min(rel.find('/', start), rel.size());
        const std::string_view segment = std::string_view(rel).substr(start, end - start);
        if (segment == "..") return std::nullopt;
        start = end + 1;
    }
    std::error_code ec;
    const std::filesystem::path file = std::filesystem::weakly_canonical(root_ / rel, ec);
    if (ec) return std::nullopt;
    // Symlinks could still lead out: the resolved file must lie under the root.
    const auto [root_end, file_it] =
        std::mismatch(root_.begin(), root_.end(), file.begin(), file.end());
    if (root_end != root_.end()) return std::nullopt;
    if (!std::filesystem::is_regular_file(file, ec)) return std::nullopt;
    std::ifstream in(file, std::ios::binary);
    if (!in) return std::nullopt;
    std::ostringstream body;
    body << in.rdbuf();
    HttpResponse r;
    r.status = 200;
    r.content_type = content_type(file);
    r.body = std::move(body).str();
    r.headers.emplace_back("Cache-Control", "no-cache");
    return r;
}

}  // namespace assistd::serve
