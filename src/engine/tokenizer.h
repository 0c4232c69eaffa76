#pragma once
// Tokenizers built from GGUF metadata (tokenizer.ggml.*):
//   - "llama": SentencePiece-style, merges by score, byte fallback (<0xNN>)
//   - "gpt2":  byte-level BPE with merges, pre-tokenizer per tokenizer.ggml.pre
//              (llama3/llama-bpe, smollm, qwen2, default gpt2)
// Token ids agree with llama.cpp's for the same file.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace assistd::engine {

class GgufFile;

using TokenId = int32_t;

enum class TokenizerKind { kSentencePiece, kByteBpe };

// A stretch of text to encode; special-token text counts only where parse_special.
struct TextSegment {
    std::string_view text;
    bool parse_special = false;
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;
    // Errors name the missing or malformed key (e.g. unknown tokenizer.ggml.model).
    static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& file);

    virtual TokenizerKind kind() const = 0;
    virtual size_t vocab_size() const = 0;

    // Encodes text. add_bos follows the caller (see add_bos_default()); with
    // add_bos, EOS is appended too when the file sets tokenizer.ggml.add_eos_token.
    // parse_special: text like "<|im_start|>" becomes the special token
    // instead of its characters (for template markup, see encode_chat; never for message content).
    std::vector<TokenId> encode(std::string_view text, bool add_bos, bool parse_special) const {
        const TextSegment whole{text, parse_special};
        return encode_segments(std::span(&whole, 1), add_bos);
    }
    // Encodes the segments as one string would be, except that a special token is
    // matched only inside a segment with parse_special, never across a boundary:
    // ordinary text gives the ids of the joined string, pre-tokenized as one.
    virtual std::vector<TokenId> encode_segments(std::span<const TextSegment> segments, bool add_bos) const = 0;

    // The bytes a token stands for (byte tokens give their byte; "▁" becomes a
    // space for SentencePiece; control tokens give "" unless render_special).
    virtual std::string token_to_piece(TokenId id, bool render_special = false) const = 0;
    // Concatenated pieces; SentencePiece drops the space the encoder added after
    // BOS and after special tokens. Text that does not follow one (e.g. generated
    // tokens alone) keeps its leading space, as llama.cpp's pieces do.
    virtual std::string decode(std::span<const TokenId> ids, bool render_special = false) const = 0;

    // The vocabulary entry as stored in the file.
    virtual const std::string& token_text(TokenId id) const = 0;
    virtual std::optional<TokenId> find_token(std::string_view text) const = 0;

    virtual TokenId bos() const = 0;  // -1 when the model has none
    virtual TokenId eos() const = 0;
    virtual bool add_bos_default() const = 0;
    // End of generation: EOS, EOT (<|eot_id|>, <|im_end|>, <|end|> ...).
    virtual bool is_end_of_generation(TokenId id) const = 0;
    virtual bool is_control(TokenId id) const = 0;
    // Unknown, control or user-defined: the tokens parse_special matches in text.
    virtual bool is_special(TokenId id) const { return is_control(id); }
    // SentencePiece with add_space_prefix puts a space before the text at the
    // start and after each special token; decode() and StreamingDetokenizer take
    // it off after BOS and special tokens.
    virtual bool decode_strips_leading_space() const { return false; }
};

// Turns a stream of token ids into text that never splits a UTF-8 character:
// feed() returns only complete characters; flush() returns the rest (invalid
// trailing bytes become U+FFFD). Like decode(), it drops the space SentencePiece
// put after BOS or a special token.
class StreamingDetokenizer {
public:
    explicit StreamingDetokenizer(const Tokenizer& tok) : tok_(tok) {}
    std::string feed(TokenId id);
    std::string flush();

private:
    const Tokenizer& tok_;
    std::string pending_;
    bool after_special_ = false;  // the next piece's leading space was added by the encoder
};

}  // namespace assistd::engine
