// GenerationChannel: what the scheduler pushes, a consumer takes, with the
// boundaries of each token's text kept so streams send one chunk per token.
#include <gtest/gtest.h>

#include <string_view>

#include "serve/scheduler.h"

namespace assistd::serve {
namespace {

std::vector<std::string> pieces(const GenerationUpdate& u) {
    std::vector<std::string> out;
    size_t begin = 0;
    for (size_t end : u.piece_ends) {
        out.emplace_back(std::string_view(u.text).substr(begin, end - begin));
        begin = end;
    }
    return out;
}

TEST(GenerationChannel, TakeKeepsEachTokensTextApart) {
    GenerationChannel channel(7);
    channel.push(10, "Once");
    channel.push(11, " upon");
    channel.push(12, "");  // held back (a partial character or a possible stop string): no piece
    channel.push(13, " a time");
    GenerationUpdate u;
    EXPECT_FALSE(channel.take(u));
    EXPECT_EQ(u.text, "Once upon a time");
    EXPECT_EQ(pieces(u), (std::vector<std::string>{"Once", " upon", " a time"}));
    EXPECT_EQ(u.tokens, (std::vector<engine::TokenId>{10, 11, 12, 13}));
    EXPECT_EQ(u.prompt_tokens, 7u);
    EXPECT_EQ(u.completion_tokens, 4u);

    // A second take appends; its offsets count from the start of the text taken so far.
    channel.push(14, ",");
    channel.push_text(" there");  // the held-back text flushed at the end is a piece of its own
    channel.finish(FinishReason::kStop);
    EXPECT_TRUE(channel.take(u));
    EXPECT_EQ(u.text, "Once upon a time, there");
    EXPECT_EQ(pieces(u), (std::vector<std::string>{"Once", " upon", " a time", ",", " there"}));
    EXPECT_EQ(u.reason, FinishReason::kStop);

    // Nothing pending: a take adds nothing.
    GenerationUpdate empty;
    EXPECT_TRUE(channel.take(empty));
    EXPECT_TRUE(empty.text.empty());
    EXPECT_TRUE(empty.piece_ends.empty());
}

}  // namespace
}  // namespace assistd::serve
