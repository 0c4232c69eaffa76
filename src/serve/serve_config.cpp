#include "serve/serve_config.h"

#include <yaml-cpp/yaml.h>

#include <exception>
#include <string>

namespace assistd::serve {
namespace {

// yaml-cpp's marks are 0-based, and -1 for nodes it made up (an empty key).
size_t line_of(const YAML::Node& node, size_t fallback) {
    const int line = node.Mark().line;
    return line >= 0 ? static_cast<size_t>(line) + 1 : fallback;
}

bool is_text(const YAML::Node& node) {
    return node.IsScalar() || node.IsNull();
}

// A null reads as "null", as yaml-cpp's as<std::string>() gives it.
std::string text_of(const YAML::Node& node) {
    return node.IsNull() ? "null" : node.Scalar();
}

std::string flow_yaml(const YAML::Node& node) {
    YAML::Emitter out;
    out << YAML::Flow << node;
    return out.good() ? std::string(out.c_str()) : std::string("?");
}

// One value as option text: a scalar as written, a mapping of scalars as
// "name=value,...". False (and `why`) for anything deeper.
bool option_text(const YAML::Node& node, std::string& text, std::string& why) {
    if (is_text(node)) {
        text = text_of(node);
        return true;
    }
    if (!node.IsMap()) {
        why = "line " + std::to_string(line_of(node, 0)) +
              ": a list inside a list is not an option value";
        return false;
    }
    text.clear();
    for (const auto& field : node) {
        if (!is_text(field.first) || !is_text(field.second)) {
            why = "line " + std::to_string(line_of(field.first, line_of(node, 0))) +
                  ": a mapping's names and values must be plain scalars (name: value)";
            return false;
        }
        if (!text.empty()) text += ',';
        text += text_of(field.first) + "=" + text_of(field.second);
    }
    return true;
}

}  // namespace

Result<std::vector<ServeConfigEntry>> parse_serve_config(std::string_view yaml_text) {
    YAML::Node root;
    try {
        root = YAML::Load(std::string(yaml_text));
    } catch (const std::exception& e) {
        return make_error(ErrorCode::kCorrupt, e.what());
    }
    if (!root.IsMap()) {
        return make_error(ErrorCode::kInvalidArgument,
                          "line " + std::to_string(line_of(root, 1)) +
                              ": the file must be a YAML mapping of option names to values");
    }
    std::vector<ServeConfigEntry> entries;
    for (const auto& kv : root) {
        ServeConfigEntry e;
        e.line = line_of(kv.first, line_of(kv.second, 1));
        e.key = is_text(kv.first) ? text_of(kv.first) : flow_yaml(kv.first);
        std::string text;
        if (kv.second.IsSequence()) {
            e.is_list = true;
            for (const auto& item : kv.second) {
                if (!option_text(item, text, e.value_error)) break;
                e.values.push_back(text);
            }
        } else if (option_text(kv.second, text, e.value_error)) {
            e.values.push_back(text);
        }
        if (!e.value_error.empty()) e.values.clear();
        entries.push_back(std::move(e));
    }
    return entries;
}

}  // namespace assistd::serve
