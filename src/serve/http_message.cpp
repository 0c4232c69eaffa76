// The request and response types the routes see; no Beast here, so the
// routes build (and fuzz) without the server.
#include <cctype>

#include "serve/http_server.h"

namespace assistd::serve {

std::string_view HttpRequest::header(std::string_view name) const {
    auto same = [](std::string_view a, std::string_view b) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i) {
            if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
                return false;
        }
        return true;
    };
    for (const auto& [k, v] : headers)
        if (same(k, name)) return v;
    return {};
}

}  // namespace assistd::serve
