// The YAML config of `assistd serve`, parsed without starting a server.
#include "serve/serve_config.h"

#include <gtest/gtest.h>

namespace assistd::serve {
namespace {

TEST(ServeConfig, KeysComeInFileOrderWithTheirLinesAndOptionText) {
    auto c = parse_serve_config(
        "model: m.gguf\n"
        "# a comment\n"
        "port: 9000\n"
        "node-id:\n"
        "api-keys:\n"
        "  - sha256: abc\n"
        "    tenant: acme\n"
        "  - sha256=def,tenant=globex\n");
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_EQ(c->size(), 4u);
    EXPECT_EQ((*c)[0].key, "model");
    EXPECT_EQ((*c)[0].line, 1u);
    EXPECT_EQ((*c)[0].values, std::vector<std::string>{"m.gguf"});
    EXPECT_FALSE((*c)[0].is_list);
    EXPECT_EQ((*c)[1].key, "port");
    EXPECT_EQ((*c)[1].line, 3u);
    EXPECT_EQ((*c)[2].values, std::vector<std::string>{"null"})
        << "an empty value reads as yaml-cpp says";
    EXPECT_EQ((*c)[3].key, "api-keys");
    EXPECT_TRUE((*c)[3].is_list);
    EXPECT_EQ((*c)[3].values,
              (std::vector<std::string>{"sha256=abc,tenant=acme", "sha256=def,tenant=globex"}));
    for (const auto& e : *c) EXPECT_TRUE(e.value_error.empty()) << e.key;
}

TEST(ServeConfig, ValuesWithoutOptionTextSayWhyAndWhere) {
    auto c = parse_serve_config("port: 1\nmodel: {a: [1, 2]}\napi-key:\n  - [nested]\n");
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_EQ(c->size(), 3u);
    EXPECT_TRUE((*c)[0].value_error.empty());
    EXPECT_EQ((*c)[1].value_error,
              "line 2: a mapping's names and values must be plain scalars (name: value)");
    EXPECT_TRUE((*c)[1].values.empty());
    EXPECT_EQ((*c)[2].value_error, "line 4: a list inside a list is not an option value");
}

TEST(ServeConfig, AKeyThatIsNoNameIsKeptAsItsYaml) {
    auto c = parse_serve_config("? [a, b]\n: 1\n");
    ASSERT_TRUE(c.ok()) << c.error().message;
    ASSERT_EQ(c->size(), 1u);
    EXPECT_EQ((*c)[0].key, "[a, b]") << "never the name of an option, so the CLI calls it unknown";
}

TEST(ServeConfig, TextThatIsNotAMappingIsAnError) {
    for (const char* text : {"", "- port\n- 1\n", "just words\n"}) {
        auto c = parse_serve_config(text);
        ASSERT_FALSE(c.ok()) << text;
        EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
        EXPECT_EQ(c.error().message,
                  "line 1: the file must be a YAML mapping of option names to values");
    }
}

TEST(ServeConfig, TextThatIsNotYamlNamesTheLine) {
    auto c = parse_serve_config("port: 1\nhost: a: b\nmodel: m\n");
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().code, ErrorCode::kCorrupt);
    EXPECT_NE(c.error().message.find("line 2"), std::string::npos) << c.error().message;
}

}  // namespace
}  // namespace assistd::serve
