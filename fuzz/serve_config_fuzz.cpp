// libFuzzer: the YAML config of `assistd serve` (serve/serve_config.h). Any
// text gives entries or an error naming what is wrong (and the line). Entries
// come in file order with lines inside the text; a value is option text or
// says why it cannot be; and the entries, written back as plain YAML (every
// string double-quoted, each key on a line of its own), read back the same.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "serve/serve_config.h"

using namespace assistd;
using serve::ServeConfigEntry;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

// A YAML double-quoted scalar holding exactly `s` (bytes >= 0x80 pass through as UTF-8).
std::string quoted(std::string_view s) {
    std::string out = "\"";
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20 || u == 0x7f) {
            char esc[5];
            std::snprintf(esc, sizeof esc, "\\x%02x", u);
            out += esc;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

std::string write_back(const std::vector<ServeConfigEntry>& entries) {
    if (entries.empty()) return "{}\n";  // an empty text is no mapping at all
    std::string yaml;
    for (const ServeConfigEntry& e : entries) {
        // Explicit keys ("? key"): an implicit one may hold at most 1024 characters.
        yaml += "? " + quoted(e.key) + "\n: ";
        if (e.is_list) {
            yaml += '[';
            for (size_t i = 0; i < e.values.size(); ++i)
                yaml += (i ? ", " : "") + quoted(e.values[i]);
            yaml += ']';
        } else {
            yaml += quoted(e.values.at(0));
        }
        yaml += '\n';
    }
    return yaml;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = serve::parse_serve_config(text);
    if (!parsed.ok()) {
        const Error& e = parsed.error();
        check(e.code == ErrorCode::kCorrupt || e.code == ErrorCode::kInvalidArgument);
        check(!e.message.empty());
        check(e.code != ErrorCode::kInvalidArgument || e.message.starts_with("line "));
        return 0;
    }
    size_t lines = 1;
    for (char c : text) lines += c == '\n' || c == '\r';
    size_t last_line = 1;
    std::vector<ServeConfigEntry> clean;
    for (const ServeConfigEntry& e : *parsed) {
        check(e.line >= last_line && e.line <= lines);
        last_line = e.line;
        if (!e.value_error.empty()) {
            check(e.values.empty() && e.value_error.starts_with("line "));
            continue;
        }
        check(e.is_list || e.values.size() == 1);
        clean.push_back(e);
    }
    // Re-parse equality, down to the line of each key.
    auto again = serve::parse_serve_config(write_back(clean));
    check(again.ok() && again->size() == clean.size());
    for (size_t i = 0; i < clean.size(); ++i) {
        const ServeConfigEntry& a = clean[i];
        const ServeConfigEntry& b = (*again)[i];
        check(b.key == a.key && b.is_list == a.is_list && b.values == a.values);
        check(b.value_error.empty() && b.line == 2 * i + 1);
    }
    return 0;
}
