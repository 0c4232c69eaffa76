#include "engine/vocab_builder.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>

#include "engine/gguf_writer.h"

namespace assistd::engine {
namespace {

// GGUF token types (tokenizer.ggml.token_type).
constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUnused = 5;
constexpr int32_t kTypeByte = 6;

constexpr std::string_view kChatMlTemplate =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";  // U+2581 "▁"
constexpr std::string_view kByteBpeSpace = "\xC4\xA0";            // U+0120 "Ġ", GPT-2's image of byte 0x20

constexpr std::array<std::string_view, 40> kFrequentBigrams = {
    "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te",
    "of", "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou",
    "io", "le", "ve", "co", "me", "de", "hi", "ri", "ro", "ic", "ne", "ea"};

constexpr std::array<std::string_view, 72> kFrequentWords = {
    "the", "and", "to", "of", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had",
    "by", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "an", "she", "do", "how", "if", "will", "up", "out", "then", "them", "so", "some", "her",
    "like", "him", "into", "time", "has", "two", "more", "no", "day", "hello", "world", "once",
    "upon", "little", "story", "user", "assistant", "system", "help", "thank"};

// Every piece is reachable by merging: a word contributes each of its prefixes
// ("▁t", "▁th", "▁the"), so one merge always extends an existing piece by one letter.
std::vector<std::string> english_pieces(std::string_view space_marker) {
    std::vector<std::string> pieces;
    std::unordered_set<std::string> seen;
    auto add = [&](std::string piece) {
        if (seen.insert(piece).second) pieces.push_back(std::move(piece));
    };
    for (const auto& word : kFrequentWords) {
        std::string prefix(space_marker);
        for (char c : word) {
            prefix.push_back(c);
            add(prefix);
        }
        if (pieces.size() > 40) break;  // the first words interleave with bigrams below
    }
    for (const auto& bigram : kFrequentBigrams) add(std::string(bigram));
    for (const auto& word : kFrequentWords) {
        std::string prefix(space_marker);
        for (char c : word) {
            prefix.push_back(c);
            add(prefix);
        }
    }
    return pieces;
}

void write_sentencepiece_vocab(GgufWriter& writer, size_t vocab_size) {
    vocab_size = std::max(vocab_size, kMinSyntheticSentencePieceVocab);
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    tokens.reserve(vocab_size);
    auto add = [&](std::string text, float score, int32_t type) {
        tokens.push_back(std::move(text));
        scores.push_back(score);
        types.push_back(type);
    };
    add("<unk>", 0.0f, kTypeUnknown);
    add("<s>", 0.0f, kTypeControl);
    add("</s>", 0.0f, kTypeControl);
    add("<|im_start|>", 0.0f, kTypeControl);
    add("<|im_end|>", 0.0f, kTypeControl);
    for (int byte = 0; byte < 256; ++byte) add(fmt::format("<0x{:02X}>", byte), 0.0f, kTypeByte);

    // Single characters first (never merge results, their score does not matter),
    // then pieces in order of preference: a higher score wins a merge.
    std::vector<std::string> pieces;
    pieces.emplace_back(kSentencePieceSpace);
    for (char c = 'a'; c <= 'z'; ++c) pieces.emplace_back(1, c);
    for (char c = 'A'; c <= 'Z'; ++c) pieces.emplace_back(1, c);
    for (char c = '0'; c <= '9'; ++c) pieces.emplace_back(1, c);
    for (char c : std::string_view(".,!?'\";:-()")) pieces.emplace_back(1, c);
    for (auto& piece : english_pieces(kSentencePieceSpace)) pieces.push_back(std::move(piece));

    float score = -1.0f;
    for (auto& piece : pieces) {
        if (tokens.size() >= vocab_size) break;
        add(std::move(piece), score, kTypeNormal);
        score -= 1.0f;
    }
    for (size_t i = 0; tokens.size() < vocab_size; ++i) add(fmt::format("<unused{}>", i), -1e9f, kTypeUnused);

    writer.set_string("tokenizer.ggml.model", "llama");
    writer.set_string_array("tokenizer.ggml.tokens", tokens);
    writer.set_f32_array("tokenizer.ggml.scores", scores);
    writer.set_i32_array("tokenizer.ggml.token_type", types);
    writer.set_u32("tokenizer.ggml.unknown_token_id", 0);
    writer.set_u32("tokenizer.ggml.bos_token_id", 1);
    writer.set_u32("tokenizer.ggml.eos_token_id", 2);
    writer.set_u32("tokenizer.ggml.eot_token_id", 4);
    writer.set_bool("tokenizer.ggml.add_bos_token", true);
    writer.set_bool("tokenizer.ggml.add_eos_token", false);
    writer.set_bool("tokenizer.ggml.add_space_prefix", true);
    writer.set_string("tokenizer.chat_template", kChatMlTemplate);
}

// GPT-2's reversible byte -> printable code point mapping, as UTF-8.
std::string byte_bpe_image(uint8_t byte) {
    uint32_t cp = byte;
    const bool printable = (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
    if (!printable) {
        // Non-printable bytes take 256, 257, ... in byte order.
        uint32_t rank = 0;
        for (uint32_t b = 0; b < byte; ++b) {
            const bool p = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            if (!p) ++rank;
        }
        cp = 256 + rank;
    }
    std::string out;
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return out;
}

void write_byte_bpe_vocab(GgufWriter& writer, size_t vocab_size) {
    vocab_size = std::max(vocab_size, kMinSyntheticByteBpeVocab);
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::vector<std::string> merges;
    std::unordered_set<std::string> known;
    auto add = [&](std::string text, int32_t type) {
        known.insert(text);
        tokens.push_back(std::move(text));
        types.push_back(type);
    };
    add("<|endoftext|>", kTypeControl);
    add("<|im_start|>", kTypeControl);
    add("<|im_end|>", kTypeControl);
    for (int byte = 0; byte < 256; ++byte) add(byte_bpe_image(static_cast<uint8_t>(byte)), kTypeNormal);

    // Each piece is one merge away from a known token: "Ġth" = "Ġt" + "h".
    for (const auto& piece : english_pieces(kByteBpeSpace)) {
        if (tokens.size() >= vocab_size) break;
        if (known.count(piece)) continue;
        size_t last_start = piece.size() - 1;  // pieces end in an ASCII letter
        std::string left = piece.substr(0, last_start);
        std::string right = piece.substr(last_start);
        if (!known.count(left) || !known.count(right)) continue;
        merges.push_back(left + " " + right);
        add(piece, kTypeNormal);
    }
    for (size_t i = 0; tokens.size() < vocab_size; ++i) add(fmt::format("<|unused_{}|>", i), kTypeUnused);

    writer.set_string("tokenizer.ggml.model", "gpt2");
    writer.set_string("tokenizer.ggml.pre", "gpt2");
    writer.set_string_array("tokenizer.ggml.tokens", tokens);
    writer.set_i32_array("tokenizer.ggml.token_type", types);
    writer.set_string_array("tokenizer.ggml.merges", merges);
    writer.set_u32("tokenizer.ggml.bos_token_id", 0);
    writer.set_u32("tokenizer.ggml.eos_token_id", 2);
    writer.set_u32("tokenizer.ggml.eot_token_id", 2);
    writer.set_u32("tokenizer.ggml.padding_token_id", 0);
    writer.set_bool("tokenizer.ggml.add_bos_token", false);
    writer.set_bool("tokenizer.ggml.add_eos_token", false);
    writer.set_string("tokenizer.chat_template", kChatMlTemplate);
}

}  // namespace

void write_synthetic_vocab(GgufWriter& writer, SyntheticVocabKind kind, size_t vocab_size) {
    switch (kind) {
        case SyntheticVocabKind::kSentencePiece: write_sentencepiece_vocab(writer, vocab_size); break;
        case SyntheticVocabKind::kByteBpe: write_byte_bpe_vocab(writer, vocab_size); break;
    }
}

}  // namespace assistd::engine
