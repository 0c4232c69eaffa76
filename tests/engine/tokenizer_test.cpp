#include "engine/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/tokenizer_impl.h"
#include "engine/vocab_builder.h"

namespace assistd::engine {
namespace {

using tokenizer_detail::PreTokenizerKind;
using tokenizer_detail::pretokenize;

const std::string kSharedDir = ASSISTD_SHARED_DIR;
const std::string kStoriesModel = kSharedDir + "/models/stories260K.gguf";
const std::string kStoriesReference = kSharedDir + "/reference/llamacpp-stories260K.json";

// A GGUF image built in the test and the file parsed from it (the file points into the bytes).
struct InMemoryGguf {
    std::vector<uint8_t> bytes;
    std::unique_ptr<GgufFile> file;
};

InMemoryGguf parse_gguf(const GgufWriter& writer) {
    InMemoryGguf result;
    result.bytes = writer.to_bytes();
    auto file = GgufFile::parse(result.bytes, "test.gguf");
    EXPECT_TRUE(file.ok()) << (file.ok() ? "" : file.error().message);
    if (file.ok()) result.file = std::move(file.value());
    return result;
}

std::unique_ptr<Tokenizer> load_tokenizer(const GgufWriter& writer, InMemoryGguf& storage) {
    storage = parse_gguf(writer);
    if (!storage.file) return nullptr;
    auto tok = Tokenizer::from_gguf(*storage.file);
    EXPECT_TRUE(tok.ok()) << (tok.ok() ? "" : tok.error().message);
    return tok.ok() ? std::move(tok.value()) : nullptr;
}

Error load_error(const GgufWriter& writer) {
    InMemoryGguf storage = parse_gguf(writer);
    if (!storage.file) return make_error(ErrorCode::kInternal, "GGUF did not parse");
    auto tok = Tokenizer::from_gguf(*storage.file);
    if (tok.ok()) return make_error(ErrorCode::kInternal, "tokenizer loaded although it should not");
    return tok.error();
}

// ---- stories260K (SentencePiece, checked against llama.cpp) ----------------------

class StoriesTokenizer : public ::testing::Test {
protected:
    void SetUp() override {
        if (!std::filesystem::exists(kStoriesModel)) GTEST_SKIP() << "no " << kStoriesModel;
        auto file = GgufFile::open(kStoriesModel);
        ASSERT_TRUE(file.ok()) << file.error().message;
        file_ = std::move(file.value());
        auto tok = Tokenizer::from_gguf(*file_);
        ASSERT_TRUE(tok.ok()) << tok.error().message;
        tok_ = std::move(tok.value());
    }
    std::unique_ptr<GgufFile> file_;
    std::unique_ptr<Tokenizer> tok_;
};

nlohmann::json load_reference() {
    std::ifstream in(kStoriesReference);
    return nlohmann::json::parse(in);
}

TEST_F(StoriesTokenizer, ReferencePromptsMatchLlamaCpp) {
    if (!std::filesystem::exists(kStoriesReference)) GTEST_SKIP() << "no " << kStoriesReference;
    const nlohmann::json reference = load_reference();
    ASSERT_FALSE(reference.empty());
    for (const auto& entry : reference) {
        const std::string prompt = entry.at("prompt");
        const std::vector<TokenId> expected = entry.at("prompt_tokens").get<std::vector<TokenId>>();
        EXPECT_EQ(tok_->encode(prompt, /*add_bos=*/true, /*parse_special=*/false), expected) << prompt;
    }
}

TEST_F(StoriesTokenizer, GreedyTokensDecodeToReferenceText) {
    if (!std::filesystem::exists(kStoriesReference)) GTEST_SKIP() << "no " << kStoriesReference;
    for (const auto& entry : load_reference()) {
        const std::vector<TokenId> ids = entry.at("greedy_tokens").get<std::vector<TokenId>>();
        const std::string expected = entry.at("greedy_text");
        EXPECT_EQ(tok_->decode(ids), expected);
        // Token by token through the streaming detokenizer gives the same text.
        StreamingDetokenizer stream(*tok_);
        std::string streamed;
        for (TokenId id : ids) streamed += stream.feed(id);
        streamed += stream.flush();
        EXPECT_EQ(streamed, expected);
    }
}

TEST_F(StoriesTokenizer, VocabularyFacts) {
    EXPECT_EQ(tok_->kind(), TokenizerKind::kSentencePiece);
    EXPECT_EQ(tok_->vocab_size(), 512u);
    EXPECT_EQ(tok_->bos(), 1);
    EXPECT_EQ(tok_->eos(), 2);
    EXPECT_TRUE(tok_->add_bos_default());
    EXPECT_TRUE(tok_->is_end_of_generation(2));
    EXPECT_FALSE(tok_->is_end_of_generation(1));
    EXPECT_FALSE(tok_->is_end_of_generation(403));
    EXPECT_FALSE(tok_->is_end_of_generation(-5));
    EXPECT_TRUE(tok_->is_control(1));
    EXPECT_EQ(tok_->find_token("<s>"), std::optional<TokenId>(1));
    EXPECT_EQ(tok_->find_token("no such piece"), std::nullopt);
    EXPECT_EQ(tok_->token_text(1), "<s>");
    EXPECT_EQ(tok_->token_text(100000), "");
    // "▁" in a piece is a space; byte tokens give their byte; control tokens are hidden unless asked.
    const TokenId once = tok_->encode("Once", false, false).at(0);
    EXPECT_EQ(tok_->token_text(once).substr(0, 3), "\xE2\x96\x81");
    EXPECT_EQ(tok_->token_to_piece(once).substr(0, 1), " ");
    EXPECT_EQ(tok_->token_to_piece(13), "\n");
    EXPECT_EQ(tok_->token_to_piece(1), "");
    EXPECT_EQ(tok_->token_to_piece(1, /*render_special=*/true), "<s>");
    EXPECT_EQ(tok_->token_to_piece(99999), "");
    // Ids outside the vocabulary decode to nothing rather than crash.
    const std::vector<TokenId> bad = {-1, 512, 100000, 13};
    EXPECT_EQ(tok_->decode(bad), "\n");
}

TEST_F(StoriesTokenizer, EmptyTextIsJustBos) {
    EXPECT_EQ(tok_->encode("", true, false), std::vector<TokenId>{1});
    EXPECT_TRUE(tok_->encode("", false, false).empty());
}

TEST_F(StoriesTokenizer, RoundTripsAsciiUnicodeAndControlCharacters) {
    const std::vector<std::string> texts = {
        "Once upon a time, there was a little girl.",
        "  two leading spaces, three   inside and trailing  ",
        "naïve café, Ünïcödé — 日本語のテキスト and emoji 🙂🚀👍🏽",
        std::string("tab\there, newline\nand NUL \0 and bell \x07 and DEL \x7F", 48),
        "\n\nstarts with newlines",
        "x",
    };
    for (const std::string& text : texts) {
        const auto ids = tok_->encode(text, true, false);
        ASSERT_FALSE(ids.empty());
        EXPECT_EQ(ids.front(), 1);
        EXPECT_EQ(tok_->decode(ids), text) << text;
    }
}

TEST_F(StoriesTokenizer, LeadingSpaceIsDroppedOnlyAfterBosOrSpecialTokens) {
    // Without BOS the space the encoder added stays, like llama.cpp's pieces of generated text.
    EXPECT_EQ(tok_->decode(tok_->encode("Once upon", false, false)), " Once upon");
    EXPECT_EQ(tok_->decode(tok_->encode("Once upon", true, false)), "Once upon");
    // With special tokens parsed, the encoder adds a space after each one; decode takes it off.
    const std::string text = "<s>Once<s> upon</s>";
    const auto ids = tok_->encode(text, false, true);
    EXPECT_EQ(ids.front(), 1);
    EXPECT_EQ(ids.back(), 2);
    EXPECT_EQ(tok_->decode(ids, /*render_special=*/true), text);
    EXPECT_EQ(tok_->decode(ids), "Once upon");
    // Not parsed: the markers stay text.
    const auto literal = tok_->encode(text, true, false);
    EXPECT_EQ(std::count(literal.begin(), literal.end(), 1), 1);
    EXPECT_EQ(tok_->decode(literal), text);
}

TEST_F(StoriesTokenizer, UnknownCharactersFallBackToByteTokens) {
    const auto ids = tok_->encode("\xF0\x9F\x99\x82", false, false);  // 🙂
    // "▁" then the four bytes of the emoji.
    ASSERT_GE(ids.size(), 4u);
    const std::vector<TokenId> tail(ids.end() - 4, ids.end());
    const char* expected[] = {"<0xF0>", "<0x9F>", "<0x99>", "<0x82>"};
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(tok_->token_text(tail[i]), expected[i]);
}

TEST_F(StoriesTokenizer, InvalidUtf8EncodesAsBytesAndRoundTrips) {
    const std::string invalid = "ok \xFF\xFE broken \xE2\x82 tail \x80";
    const auto ids = tok_->encode(invalid, true, false);
    EXPECT_EQ(tok_->decode(ids), invalid);
    std::mt19937 rng(1234);
    for (int round = 0; round < 200; ++round) {
        std::string text(rng() % 64, '\0');
        for (char& c : text) c = static_cast<char>(rng() % 256);
        if (text.find("\xE2\x96\x81") != std::string::npos) continue;  // a literal "▁" decodes as a space
        const auto encoded = tok_->encode(text, true, false);
        EXPECT_EQ(tok_->decode(encoded), text);
    }
}

TEST_F(StoriesTokenizer, StreamingHoldsBackASplitEmoji) {
    const auto ids = tok_->encode("Hi \xF0\x9F\x99\x82!", true, false);
    StreamingDetokenizer stream(*tok_);
    std::vector<std::string> outputs;
    for (TokenId id : ids) outputs.push_back(stream.feed(id));
    const std::string rest = stream.flush();
    std::string all;
    for (const auto& s : outputs) all += s;
    all += rest;
    EXPECT_EQ(all, "Hi \xF0\x9F\x99\x82!");
    // No output ever ends inside the emoji: every piece is valid UTF-8 on its own.
    bool saw_emoji_alone = false;
    for (const auto& s : outputs) {
        EXPECT_EQ(tokenizer_detail::sanitize_utf8(s), s);
        if (s.find("\xF0\x9F\x99\x82") != std::string::npos) saw_emoji_alone = true;
    }
    EXPECT_TRUE(saw_emoji_alone);
    // The three leading bytes alone produce nothing until the fourth arrives.
    const auto emoji = tok_->encode("\xF0\x9F\x99\x82", true, false);
    StreamingDetokenizer partial(*tok_);
    std::string got;
    for (size_t i = 0; i + 1 < emoji.size(); ++i) got += partial.feed(emoji[i]);
    EXPECT_EQ(got, "");  // BOS is hidden, the "▁" after it is dropped, the bytes are held
    EXPECT_EQ(partial.feed(emoji.back()), "\xF0\x9F\x99\x82");
}

TEST_F(StoriesTokenizer, FlushReplacesAnIncompleteCharacter) {
    const auto emoji = tok_->encode("a\xF0\x9F\x99\x82", true, false);
    StreamingDetokenizer stream(*tok_);
    std::string got;
    for (size_t i = 0; i + 1 < emoji.size(); ++i) got += stream.feed(emoji[i]);
    EXPECT_EQ(got, "a");
    EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");
    EXPECT_EQ(stream.flush(), "");
}

TEST_F(StoriesTokenizer, LongPromptEncodesQuickly) {
    std::string text;
    while (text.size() < 40000) text += "Once upon a time, there was a little girl named Lily. She loved to play. ";
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok_->encode(text, true, false);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("encoded %zu bytes into %zu tokens in %.2f ms\n", text.size(), ids.size(), ms);
    EXPECT_GT(ids.size(), 8000u);
    EXPECT_EQ(tok_->decode(ids), text);
    EXPECT_LT(ms, 2000.0);  // a guard against quadratic merging, not a benchmark
}

// ---- Synthetic vocabularies ------------------------------------------------------

TEST(SyntheticVocab, SentencePieceLoadsAndRoundTrips) {
    for (size_t size : {512u, 777u, 4096u}) {
        GgufWriter writer;
        write_synthetic_vocab(writer, SyntheticVocabKind::kSentencePiece, size);
        InMemoryGguf storage;
        auto tok = load_tokenizer(writer, storage);
        ASSERT_TRUE(tok);
        EXPECT_EQ(tok->kind(), TokenizerKind::kSentencePiece);
        EXPECT_EQ(tok->vocab_size(), size);
        EXPECT_TRUE(tok->add_bos_default());
        EXPECT_TRUE(storage.file->get_string("tokenizer.chat_template").has_value());
        for (const std::string text : {"Hello world, the story of a little day.", "naïve 日本語 🙂\t\n\x01",
                                       "  spaced  out  ", "<|im_start|>user\nhi<|im_end|>"}) {
            const auto ids = tok->encode(text, true, false);
            EXPECT_EQ(tok->decode(ids), text);
        }
        // Frequent words are single pieces.
        const auto the = tok->encode("the", false, false);
        ASSERT_EQ(the.size(), 1u);
        EXPECT_EQ(tok->token_text(the[0]), "\xE2\x96\x81the");
        // ChatML markers are special tokens, and <|im_end|> ends a turn.
        const auto chat = tok->encode("<|im_start|>user\nhi<|im_end|>", false, true);
        ASSERT_FALSE(chat.empty());
        EXPECT_EQ(tok->token_text(chat.front()), "<|im_start|>");
        EXPECT_TRUE(tok->is_end_of_generation(chat.back()));
        EXPECT_TRUE(tok->is_end_of_generation(tok->eos()));
    }
}

TEST(SyntheticVocab, ByteBpeLoadsAndRoundTrips) {
    for (size_t size : {300u, 301u, 1000u}) {
        GgufWriter writer;
        write_synthetic_vocab(writer, SyntheticVocabKind::kByteBpe, size);
        InMemoryGguf storage;
        auto tok = load_tokenizer(writer, storage);
        ASSERT_TRUE(tok);
        EXPECT_EQ(tok->kind(), TokenizerKind::kByteBpe);
        EXPECT_EQ(tok->vocab_size(), size);
        EXPECT_FALSE(tok->add_bos_default());
        for (const std::string& text : std::vector<std::string>{"Hello world, the story of a little day.",
                                                                "naïve 日本語 🙂\t\n\x01", "  spaced  out  ",
                                                                std::string("\0\xFF\xC3", 3)}) {
            const auto ids = tok->encode(text, false, false);
            EXPECT_EQ(tok->decode(ids), text);
        }
        const auto the = tok->encode(" the", false, false);
        ASSERT_EQ(the.size(), 1u);
        EXPECT_EQ(tok->token_text(the[0]), "\xC4\xA0the");
        const auto chat = tok->encode("<|im_start|>assistant\nok<|im_end|>", false, true);
        EXPECT_EQ(tok->token_text(chat.front()), "<|im_start|>");
        EXPECT_TRUE(tok->is_end_of_generation(chat.back()));
        EXPECT_EQ(tok->decode(chat, /*render_special=*/true), "<|im_start|>assistant\nok<|im_end|>");
    }
}

TEST(SyntheticVocab, IsDeterministic) {
    for (auto kind : {SyntheticVocabKind::kSentencePiece, SyntheticVocabKind::kByteBpe}) {
        GgufWriter a;
        GgufWriter b;
        write_synthetic_vocab(a, kind, 1024);
        write_synthetic_vocab(b, kind, 1024);
        EXPECT_EQ(a.to_bytes(), b.to_bytes());
    }
}

// ---- Byte-level BPE with hand-built vocabularies -------------------------------------

std::string byte_image(uint8_t byte) {
    std::string out;
    tokenizer_detail::append_utf8(out, tokenizer_detail::gpt2_byte_to_code_point(byte));
    return out;
}

// 256 byte tokens, then the given merges' results, then the special tokens.
struct BpeSpec {
    std::vector<std::string> merges;
    std::vector<std::pair<std::string, int32_t>> specials;  // text, token type
    std::string pre = "gpt2";
};

GgufWriter bpe_writer(const BpeSpec& spec) {
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    for (int b = 0; b < 256; ++b) {
        tokens.push_back(byte_image(static_cast<uint8_t>(b)));
        types.push_back(1);
    }
    for (const std::string& merge : spec.merges) {
        const size_t space = merge.find(' ');
        tokens.push_back(merge.substr(0, space) + merge.substr(space + 1));
        types.push_back(1);
    }
    for (const auto& [text, type] : spec.specials) {
        tokens.push_back(text);
        types.push_back(type);
    }
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "gpt2");
    writer.set_string("tokenizer.ggml.pre", spec.pre);
    writer.set_string_array("tokenizer.ggml.tokens", tokens);
    writer.set_i32_array("tokenizer.ggml.token_type", types);
    writer.set_string_array("tokenizer.ggml.merges", spec.merges);
    if (!spec.specials.empty()) writer.set_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(tokens.size() - 1));
    return writer;
}

std::vector<std::string> token_texts(const Tokenizer& tok, const std::vector<TokenId>& ids) {
    std::vector<std::string> out;
    for (TokenId id : ids) out.push_back(tok.token_text(id));
    return out;
}

TEST(ByteBpe, MergesApplyInRankOrder) {
    {
        InMemoryGguf storage;
        auto tok = load_tokenizer(bpe_writer({{"b c", "a b"}, {}, "gpt2"}), storage);
        ASSERT_TRUE(tok);
        EXPECT_EQ(token_texts(*tok, tok->encode("abc", false, false)), (std::vector<std::string>{"a", "bc"}));
    }
    {
        InMemoryGguf storage;
        auto tok = load_tokenizer(bpe_writer({{"a b", "b c"}, {}, "gpt2"}), storage);
        ASSERT_TRUE(tok);
        EXPECT_EQ(token_texts(*tok, tok->encode("abc", false, false)), (std::vector<std::string>{"ab", "c"}));
    }
    {
        // Equal pairs merge leftmost first, and merged pieces merge again.
        InMemoryGguf storage;
        auto tok = load_tokenizer(bpe_writer({{"a a", "aa aa", "Ġ aaaa"}, {}, "gpt2"}), storage);
        ASSERT_TRUE(tok);
        EXPECT_EQ(token_texts(*tok, tok->encode("aaaaa", false, false)), (std::vector<std::string>{"aaaa", "a"}));
        EXPECT_EQ(token_texts(*tok, tok->encode("x aaaa", false, false)),
                  (std::vector<std::string>{"x", "Ġaaaa"}));
    }
}

std::vector<std::string> split(PreTokenizerKind kind, std::string_view text) {
    std::vector<std::string_view> words;
    pretokenize(kind, text, words);
    return std::vector<std::string>(words.begin(), words.end());
}

TEST(PreTokenizer, Gpt2Splits) {
    EXPECT_EQ(split(PreTokenizerKind::kGpt2, "Hello world's 12345 test!!\n\n  x"),
              (std::vector<std::string>{"Hello", " world", "'s", " 12345", " test", "!!", "\n\n ", " x"}));
    EXPECT_EQ(split(PreTokenizerKind::kGpt2, "I'LL go  "), (std::vector<std::string>{"I", "'", "LL", " go", "  "}));
    EXPECT_EQ(split(PreTokenizerKind::kGpt2, "naïve café 日本語 🙂"),
              (std::vector<std::string>{"naïve", " café", " 日本語", " 🙂"}));
}

TEST(PreTokenizer, Llama3Splits) {
    EXPECT_EQ(split(PreTokenizerKind::kLlama3, "Hello world's 12345 test!!\n\n  x"),
              (std::vector<std::string>{"Hello", " world", "'s", " ", "123", "45", " test", "!!\n\n", " ", " x"}));
    EXPECT_EQ(split(PreTokenizerKind::kLlama3, "I'LL go"), (std::vector<std::string>{"I", "'LL", " go"}));
    EXPECT_EQ(split(PreTokenizerKind::kLlama3, "a\n\n\tb  \n c"),
              (std::vector<std::string>{"a", "\n\n", "\tb", "  \n", " c"}));
    EXPECT_EQ(split(PreTokenizerKind::kLlama3, "(x) .5"), (std::vector<std::string>{"(x", ")", " .", "5"}));
}

TEST(PreTokenizer, Qwen2SplitsDigitsOneByOne) {
    EXPECT_EQ(split(PreTokenizerKind::kQwen2, "Hello world's 12345 test!!\n\n  x"),
              (std::vector<std::string>{"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " test", "!!\n\n", " ",
                                        " x"}));
}

TEST(PreTokenizer, SmolLmSplitsDigitsFirst) {
    EXPECT_EQ(split(PreTokenizerKind::kSmolLm, "Hello world's 12345 test!!\n\n  x"),
              (std::vector<std::string>{"Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " test", "!!", "\n\n ",
                                        " x"}));
}

TEST(PreTokenizer, KeepsInvalidBytes) {
    const std::string text = "ab\xFF\xC3 cd";
    std::string joined;
    for (const auto& w : split(PreTokenizerKind::kLlama3, text)) joined += w;
    EXPECT_EQ(joined, text);
}

TEST(ByteBpe, UnicodeRoundTripsForEveryPreTokenizer) {
    for (const char* pre : {"gpt2", "llama-bpe", "llama3", "qwen2", "smollm", "something-new"}) {
        InMemoryGguf storage;
        auto tok = load_tokenizer(bpe_writer({{"n a", "Ġ c", "Ã ¯"}, {}, pre}), storage);
        ASSERT_TRUE(tok);
        for (const std::string text : {"naïve café 日本語 🙂", "Hello world's 12345 test!!\n\n  x",
                                       "\t\x01\x7F control", "  "}) {
            EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text) << pre;
        }
        std::mt19937 rng(99);
        for (int round = 0; round < 100; ++round) {
            std::string text(rng() % 48, '\0');
            for (char& c : text) c = static_cast<char>(rng() % 256);
            EXPECT_EQ(tok->decode(tok->encode(text, false, false)), text) << pre;
        }
    }
}

TEST(ByteBpe, SpecialTokensOnlyWhenAsked) {
    BpeSpec spec;
    spec.merges = {"u s", "us e", "use r"};
    spec.specials = {{"<|im_start|>", 3}, {"<|im_end|>", 3}, {"<|endoftext|>", 3}, {"<tool>", 4}};
    InMemoryGguf storage;
    auto tok = load_tokenizer(bpe_writer(spec), storage);
    ASSERT_TRUE(tok);
    const TokenId im_start = *tok->find_token("<|im_start|>");
    const TokenId im_end = *tok->find_token("<|im_end|>");
    const TokenId tool = *tok->find_token("<tool>");
    const std::string text = "<|im_start|>user\n<tool>hi<|im_end|>";
    const auto parsed = tok->encode(text, false, true);
    EXPECT_EQ(token_texts(*tok, parsed), (std::vector<std::string>{"<|im_start|>", "user", "Ċ", "<tool>", "h", "i",
                                                                     "<|im_end|>"}));
    EXPECT_EQ(parsed.front(), im_start);
    EXPECT_EQ(parsed.back(), im_end);
    // Control tokens are hidden unless rendered; user-defined ones always show.
    EXPECT_EQ(tok->decode(parsed), "user\n<tool>hi");
    EXPECT_EQ(tok->decode(parsed, true), text);
    const auto literal = tok->encode(text, false, false);
    for (TokenId id : literal) {
        EXPECT_NE(id, im_start);
        EXPECT_NE(id, tool);
    }
    EXPECT_EQ(tok->decode(literal), text);
    EXPECT_TRUE(tok->is_end_of_generation(im_end));
    EXPECT_TRUE(tok->is_end_of_generation(*tok->find_token("<|endoftext|>")));
    EXPECT_FALSE(tok->is_end_of_generation(im_start));
    EXPECT_EQ(tok->token_to_piece(im_start), "");
    EXPECT_EQ(tok->token_to_piece(im_start, true), "<|im_start|>");
    EXPECT_EQ(tok->token_to_piece(*tok->find_token("Ġ")), " ");
}

TEST(ByteBpe, Llama3TakesWholeWordsFromTheVocabulary) {
    // "hello" is a token but no merge builds it: llama3 still uses it (ignore_merges).
    BpeSpec spec;
    spec.merges = {"h e"};
    spec.specials = {{"hello", 1}};
    spec.pre = "llama3";
    InMemoryGguf storage;
    auto tok = load_tokenizer(bpe_writer(spec), storage);
    ASSERT_TRUE(tok);
    EXPECT_EQ(token_texts(*tok, tok->encode("hello", false, false)), (std::vector<std::string>{"hello"}));
    spec.pre = "gpt2";
    InMemoryGguf storage2;
    auto gpt2 = load_tokenizer(bpe_writer(spec), storage2);
    EXPECT_EQ(token_texts(*gpt2, gpt2->encode("hello", false, false)),
              (std::vector<std::string>{"he", "l", "l", "o"}));
}

TEST(ByteBpe, StreamingJoinsMultiByteCharacters) {
    InMemoryGguf storage;
    auto tok = load_tokenizer(bpe_writer({}), storage);
    ASSERT_TRUE(tok);
    const auto ids = tok->encode("🙂é", false, false);
    ASSERT_EQ(ids.size(), 6u);  // one token per byte
    StreamingDetokenizer stream(*tok);
    EXPECT_EQ(stream.feed(ids[0]), "");
    EXPECT_EQ(stream.feed(ids[1]), "");
    EXPECT_EQ(stream.feed(ids[2]), "");
    EXPECT_EQ(stream.feed(ids[3]), "🙂");
    EXPECT_EQ(stream.feed(ids[4]), "");
    EXPECT_EQ(stream.feed(ids[5]), "é");
    EXPECT_EQ(stream.flush(), "");
}

TEST(ByteBpe, LongPromptEncodesQuickly) {
    GgufWriter writer;
    write_synthetic_vocab(writer, SyntheticVocabKind::kByteBpe, 2000);
    InMemoryGguf storage;
    auto tok = load_tokenizer(writer, storage);
    ASSERT_TRUE(tok);
    std::string text;
    while (text.size() < 40000) text += "Hello world, the story of a little day with 12345 numbers! ";
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text, false, false);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("encoded %zu bytes into %zu tokens in %.2f ms\n", text.size(), ids.size(), ms);
    EXPECT_EQ(tok->decode(ids), text);
    EXPECT_LT(ms, 2000.0);
}

// ---- Errors ---------------------------------------------------------------------

GgufWriter minimal_spm_writer() {
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "llama");
    writer.set_string_array("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
    writer.set_f32_array("tokenizer.ggml.scores", {0, 0, 0, -1});
    writer.set_i32_array("tokenizer.ggml.token_type", {2, 3, 3, 1});
    return writer;
}

TEST(TokenizerErrors, MinimalVocabularyLoads) {
    InMemoryGguf storage;
    auto tok = load_tokenizer(minimal_spm_writer(), storage);
    ASSERT_TRUE(tok);
    // "▁" is not in this vocabulary and no byte tokens: unknown characters become <unk>.
    const auto ids = tok->encode("a b", false, false);
    EXPECT_FALSE(ids.empty());
}

TEST(TokenizerErrors, MissingModelKey) {
    GgufWriter writer;
    writer.set_string_array("tokenizer.ggml.tokens", {"a"});
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.model"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, UnknownModelKind) {
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "bert");
    writer.set_string_array("tokenizer.ggml.tokens", {"a"});
    const Error e = load_error(writer);
    EXPECT_EQ(e.code, ErrorCode::kUnsupported);
    EXPECT_NE(e.message.find("tokenizer.ggml.model"), std::string::npos) << e.message;
    EXPECT_NE(e.message.find("bert"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, MissingTokens) {
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "llama");
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.tokens"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, MismatchedScores) {
    GgufWriter writer = minimal_spm_writer();
    writer.set_f32_array("tokenizer.ggml.scores", {0, 0});
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.scores"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, MismatchedTokenTypes) {
    GgufWriter writer = minimal_spm_writer();
    writer.set_i32_array("tokenizer.ggml.token_type", {1, 1, 1, 1, 1});
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.token_type"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, BosOutOfRange) {
    GgufWriter writer = minimal_spm_writer();
    writer.set_u32("tokenizer.ggml.bos_token_id", 4);
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.bos_token_id"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, Gpt2WithoutMerges) {
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "gpt2");
    writer.set_string_array("tokenizer.ggml.tokens", {"a", "b"});
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.merges"), std::string::npos) << e.message;
}

TEST(TokenizerErrors, MalformedMerge) {
    GgufWriter writer;
    writer.set_string("tokenizer.ggml.model", "gpt2");
    writer.set_string_array("tokenizer.ggml.tokens", {"a", "b"});
    writer.set_string_array("tokenizer.ggml.merges", {"ab"});
    const Error e = load_error(writer);
    EXPECT_NE(e.message.find("tokenizer.ggml.merges"), std::string::npos) << e.message;
}

}  // namespace
}  // namespace assistd::engine
