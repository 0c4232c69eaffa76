#pragma once
// The YAML file of `assistd serve --config`, read apart from the CLI so it can
// be tested and fuzzed without a server: a mapping of long option names to
// values, each turned into the option text a flag would carry. Which keys are
// options, and whether a value converts, is the CLI's to decide.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace assistd::serve {

struct ServeConfigEntry {
    std::string key;       // a non-scalar key is kept as its flow YAML ("[a, b]"): never an option
    size_t line = 0;       // 1-based line of the key
    bool is_list = false;  // a YAML sequence: one value per item
    std::vector<std::string> values;  // a scalar as written, a mapping as "name=value,..."
    std::string value_error;          // not empty: the value has no option text; says why and where
};

// The entries in file order (duplicate keys included). Errors: kCorrupt when
// the text is not YAML (yaml-cpp's message, naming line and column),
// kInvalidArgument when it is not a mapping (naming the line).
Result<std::vector<ServeConfigEntry>> parse_serve_config(std::string_view yaml_text);

}  // namespace assistd::serve
