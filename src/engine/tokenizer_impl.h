#pragma once
// Private to the tokenizer files: the vocabulary as loaded from GGUF, UTF-8
// helpers, the pre-tokenizer and the two tokenizer implementations.
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/utf8.h"
#include "engine/tokenizer.h"

namespace assistd::engine::tokenizer_detail {

// tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
    kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

struct TransparentStringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, TransparentStringHash, std::equal_to<>>;

// ---- UTF-8 ----------------------------------------------------------------

inline constexpr uint32_t kReplacementCharacter = 0xFFFD;

// Length of the sequence a lead byte announces (1 for ASCII, continuation and
// invalid bytes), the way SentencePiece splits text into characters.
inline size_t utf8_sequence_length(uint8_t lead) {
    static constexpr uint8_t kLengthByHighNibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return kLengthByHighNibble[lead >> 4];
}

// Strict decoding and encoding live in common/utf8.h.
using assistd::DecodedCodePoint;
using assistd::append_utf8;
using assistd::decode_utf8;
// Replaces every invalid byte sequence with U+FFFD.
std::string sanitize_utf8(std::string_view s);
// Length of the longest prefix that does not end inside an incomplete (but so
// far valid) multi-byte sequence.
size_t complete_utf8_prefix_length(std::string_view s);

// ---- Pre-tokenizer (byte-level BPE) ---------------------------------------

enum class PreTokenizerKind { kGpt2, kLlama3, kQwen2, kSmolLm };

PreTokenizerKind pre_tokenizer_from_name(std::string_view name);
// Splits text into the words the BPE merges run on, as the model's regex would.
// Invalid UTF-8 bytes are kept (each one a separate "other" character).
void pretokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words);

enum class CharClass : uint8_t { kLetter, kNumber, kWhitespace, kOther };
CharClass classify_code_point(uint32_t code_point);

// ---- Vocabulary -------------------------------------------------------------

struct Vocabulary {
    std::vector<std::string> texts;
    std::vector<float> scores;
    std::vector<TokenType> types;
    StringMap<TokenId> index;  // text -> id (the last of duplicates, like llama.cpp)
    TokenId bos = -1, eos = -1, unknown = -1, padding = -1, end_of_turn = -1;
    bool add_bos = false;
    bool add_eos = false;
    bool add_space_prefix = false;
    // Tokens matched in text when parse_special (unknown, control, user-defined), longest first.
    std::vector<TokenId> specials_longest_first;
    std::vector<uint8_t> end_of_generation;  // per id

    bool valid(TokenId id) const { return id >= 0 && static_cast<size_t>(id) < texts.size(); }
    TokenType type(TokenId id) const { return valid(id) ? types[id] : TokenType::kUndefined; }
};

// A stretch of input: raw text, or a special token found in it.
struct Fragment {
    std::string_view text;
    TokenId special = -1;
};

class TokenizerBase : public Tokenizer {
public:
    explicit TokenizerBase(Vocabulary vocab) : vocab_(std::move(vocab)) {}

    size_t vocab_size() const override { return vocab_.texts.size(); }
    const std::string& token_text(TokenId id) const override;
    std::optional<TokenId> find_token(std::string_view text) const override;
    TokenId bos() const override { return vocab_.bos; }
    TokenId eos() const override { return vocab_.eos; }
    bool add_bos_default() const override { return vocab_.add_bos; }
    bool is_end_of_generation(TokenId id) const override;
    bool is_control(TokenId id) const override;
    bool is_special(TokenId id) const override;
    std::string decode(std::span<const TokenId> ids, bool render_special) const override;
    std::vector<TokenId> encode_segments(std::span<const TextSegment> segments, bool add_bos) const override;

protected:
    // Appends the tokens of one stretch of raw text; after_special tells whether
    // the stretch follows the start of the input or a special token.
    virtual void encode_fragment(std::string_view text, bool after_special, std::vector<TokenId>& out) const = 0;
    void split_special_tokens(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;

    Vocabulary vocab_;
    std::string empty_;
};

class SentencePieceTokenizer final : public TokenizerBase {
public:
    explicit SentencePieceTokenizer(Vocabulary vocab);
    TokenizerKind kind() const override { return TokenizerKind::kSentencePiece; }
    std::string token_to_piece(TokenId id, bool render_special) const override;
    bool decode_strips_leading_space() const override { return vocab_.add_space_prefix; }

private:
    void encode_fragment(std::string_view text, bool after_special, std::vector<TokenId>& out) const override;
    void append_bytes(std::string_view bytes, std::vector<TokenId>& out) const;

    std::array<TokenId, 256> byte_tokens_{};  // <0xNN> ids, -1 when absent
};

class ByteBpeTokenizer final : public TokenizerBase {
public:
    ByteBpeTokenizer(Vocabulary vocab, StringMap<int32_t> merge_ranks, PreTokenizerKind pre_tokenizer,
                     bool ignore_merges);
    TokenizerKind kind() const override { return TokenizerKind::kByteBpe; }
    std::string token_to_piece(TokenId id, bool render_special) const override;

private:
    void encode_fragment(std::string_view text, bool after_special, std::vector<TokenId>& out) const override;
    void encode_word(std::string_view mapped_word, std::vector<TokenId>& out) const;

    StringMap<int32_t> merge_ranks_;  // "left right" -> rank
    PreTokenizerKind pre_tokenizer_;
    bool ignore_merges_;
    std::array<std::string, 256> byte_images_;  // GPT-2 byte -> printable code point (UTF-8)
    std::unordered_map<uint32_t, uint8_t> image_bytes_;
};

// GPT-2's reversible mapping of bytes to printable code points.
uint32_t gpt2_byte_to_code_point(uint8_t byte);

}  // namespace assistd::engine::tokenizer_detail
