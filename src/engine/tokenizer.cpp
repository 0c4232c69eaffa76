// Loading a tokenizer from GGUF metadata, what both kinds share, UTF-8 helpers
// and the streaming detokenizer.
#include "engine/tokenizer.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "engine/gguf.h"
#include "engine/tokenizer_impl.h"

namespace assistd::engine {

using namespace tokenizer_detail;

namespace tokenizer_detail {

std::string sanitize_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (pos < s.size()) {
        DecodedCodePoint c = decode_utf8(s, pos);
        if (c.valid) {
            out.append(s.substr(pos, c.length));
            pos += c.length;
            continue;
        }
        // One U+FFFD for a truncated sequence (lead byte and its continuations), else per byte.
        append_utf8(out, kReplacementCharacter);
        const auto lead = static_cast<uint8_t>(s[pos]);
        const size_t expected = lead >= 0xF8 ? 1 : utf8_sequence_length(lead);
        size_t length = 1;
        while (length < expected && pos + length < s.size() &&
               (static_cast<uint8_t>(s[pos + length]) & 0xC0) == 0x80)
            ++length;
        pos += length;
    }
    return out;
}

size_t complete_utf8_prefix_length(std::string_view s) {
    // Look back at most 3 bytes for a lead byte whose sequence is not finished yet.
    const size_t lookback = std::min<size_t>(3, s.size());
    for (size_t back = 1; back <= lookback; ++back) {
        const size_t pos = s.size() - back;
        const auto byte = static_cast<uint8_t>(s[pos]);
        if ((byte & 0xC0) == 0x80) continue;  // continuation: keep looking for the lead
        size_t expected = 0;
        if ((byte & 0xE0) == 0xC0) expected = 2;
        else if ((byte & 0xF0) == 0xE0) expected = 3;
        else if ((byte & 0xF8) == 0xF0) expected = 4;
        if (expected > back) return pos;  // an incomplete sequence: hold it back
        return s.size();
    }
    return s.size();
}

const std::string& TokenizerBase::token_text(TokenId id) const {
    return vocab_.valid(id) ? vocab_.texts[id] : empty_;
}

std::optional<TokenId> TokenizerBase::find_token(std::string_view text) const {
    auto it = vocab_.index.find(text);
    if (it == vocab_.index.end()) return std::nullopt;
    return it->second;
}

bool TokenizerBase::is_end_of_generation(TokenId id) const {
    return vocab_.valid(id) && vocab_.end_of_generation[id] != 0;
}

bool TokenizerBase::is_control(TokenId id) const { return vocab_.type(id) == TokenType::kControl; }

bool TokenizerBase::is_special(TokenId id) const {
    const TokenType type = vocab_.type(id);
    return type == TokenType::kControl || type == TokenType::kUserDefined || type == TokenType::kUnknown;
}

void TokenizerBase::split_special_tokens(std::string_view text, bool parse_special,
                                         std::vector<Fragment>& out) const {
    out.clear();
    if (text.empty()) return;
    out.push_back(Fragment{text, -1});
    if (!parse_special) return;
    // Longest token first over all fragments, as llama.cpp does, so "<|im_end|>"
    // wins over a shorter special token that is a part of it.
    std::vector<Fragment> next;
    for (TokenId special : vocab_.specials_longest_first) {
        const std::string& needle = vocab_.texts[special];
        if (text.find(needle) == std::string_view::npos) continue;
        next.clear();
        for (const Fragment& fragment : out) {
            if (fragment.special >= 0) {
                next.push_back(fragment);
                continue;
            }
            std::string_view rest = fragment.text;
            while (!rest.empty()) {
                const size_t at = rest.find(needle);
                if (at == std::string_view::npos) {
                    next.push_back(Fragment{rest, -1});
                    break;
                }
                if (at > 0) next.push_back(Fragment{rest.substr(0, at), -1});
                next.push_back(Fragment{rest.substr(at, needle.size()), special});
                rest.remove_prefix(at + needle.size());
            }
        }
        out.swap(next);
    }
}

std::vector<TokenId> TokenizerBase::encode_segments(std::span<const TextSegment> segments, bool add_bos) const {
    // One string, so ordinary text either side of a boundary is tokenized as if unsplit.
    std::string joined;
    std::string_view text;
    if (segments.size() == 1) {
        text = segments[0].text;
    } else {
        for (const TextSegment& segment : segments) joined += segment.text;
        text = joined;
    }
    std::vector<Fragment> fragments;
    std::vector<Fragment> segment_fragments;
    size_t offset = 0;
    for (const TextSegment& segment : segments) {
        split_special_tokens(text.substr(offset, segment.text.size()), segment.parse_special, segment_fragments);
        offset += segment.text.size();
        for (const Fragment& fragment : segment_fragments) {
            // Raw text that runs on into the next segment continues the same fragment.
            if (fragment.special < 0 && !fragments.empty() && fragments.back().special < 0) {
                std::string_view& previous = fragments.back().text;
                previous = std::string_view(previous.data(), previous.size() + fragment.text.size());
            } else {
                fragments.push_back(fragment);
            }
        }
    }

    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    if (add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
    bool after_special = true;  // the start of the text counts as following a special token
    for (const Fragment& fragment : fragments) {
        if (fragment.special >= 0) {
            out.push_back(fragment.special);
            after_special = true;
        } else {
            encode_fragment(fragment.text, after_special, out);
            after_special = false;
        }
    }
    if (add_bos && vocab_.add_eos && vocab_.eos >= 0) out.push_back(vocab_.eos);
    return out;
}

namespace {

// One token's contribution to decoded text; after_special tracks where
// SentencePiece's encoder added a space (after BOS or another special token).
void append_decoded_piece(const Tokenizer& tok, TokenId id, bool render_special, bool& after_special,
                          std::string& out) {
    std::string piece = tok.token_to_piece(id, render_special);
    if (tok.is_special(id)) {
        out += piece;
        after_special = true;
        return;
    }
    if (piece.empty()) return;
    size_t skip = 0;
    if (after_special && tok.decode_strips_leading_space() && piece[0] == ' ') skip = 1;
    after_special = false;
    out.append(piece, skip, std::string::npos);
}

}  // namespace

std::string TokenizerBase::decode(std::span<const TokenId> ids, bool render_special) const {
    std::string out;
    bool after_special = false;
    for (TokenId id : ids) append_decoded_piece(*this, id, render_special, after_special, out);
    return out;
}

}  // namespace tokenizer_detail

// ---- Loading ------------------------------------------------------------------

namespace {

constexpr std::array<std::string_view, 8> kEndOfTurnTexts = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<end_of_turn>", "<|eom_id|>", "<|end_of_text|>",
    "<EOT>"};

bool is_numeric_type(GgufValueType t) {
    return t != GgufValueType::STRING && t != GgufValueType::ARRAY;
}

Error corrupt(std::string message) { return make_error(ErrorCode::kCorrupt, std::move(message)); }

// Reads an optional token id key; absent -> fallback; present but out of range -> error.
Result<TokenId> read_token_id(const GgufFile& file, std::string_view key, TokenId fallback, size_t n_vocab) {
    const GgufValue* value = file.find(key);
    if (!value) return (fallback >= 0 && static_cast<size_t>(fallback) < n_vocab) ? fallback : TokenId{-1};
    if (auto i = file.get_int(key)) {
        // Converters write -1 (or its uint32 image) for "none".
        if (*i == -1 || *i == static_cast<int64_t>(UINT32_MAX)) return TokenId{-1};
        if (*i >= 0 && static_cast<uint64_t>(*i) < n_vocab) return static_cast<TokenId>(*i);
        return corrupt(fmt::format("{} is {}, outside the vocabulary of {} tokens (tokenizer.ggml.tokens)", key,
                                   *i, n_vocab));
    }
    return corrupt(fmt::format("{} is not an integer", key));
}

bool read_flag(const GgufFile& file, std::string_view key, bool fallback) {
    if (auto b = file.get_bool(key)) return *b;
    if (auto u = file.get_uint(key)) return *u != 0;
    return fallback;
}

Result<Vocabulary> load_vocabulary(const GgufFile& file, bool sentencepiece) {
    Vocabulary vocab;
    const GgufArray* tokens = file.get_array("tokenizer.ggml.tokens");
    if (!tokens) return corrupt("tokenizer.ggml.tokens is missing or not an array: the file has no vocabulary");
    if (tokens->elem_type != GgufValueType::STRING || tokens->strings.size() != tokens->count)
        return corrupt("tokenizer.ggml.tokens must be an array of strings");
    if (tokens->count == 0) return corrupt("tokenizer.ggml.tokens is empty");
    if (tokens->count > static_cast<uint64_t>(INT32_MAX))
        return corrupt("tokenizer.ggml.tokens has more tokens than fit a 32-bit token id");
    const size_t n_vocab = tokens->count;

    vocab.texts.reserve(n_vocab);
    for (std::string_view text : tokens->strings) vocab.texts.emplace_back(text);

    vocab.scores.assign(n_vocab, 0.0f);
    if (const GgufArray* scores = file.get_array("tokenizer.ggml.scores")) {
        if (!is_numeric_type(scores->elem_type)) return corrupt("tokenizer.ggml.scores must be numeric");
        if (scores->count != n_vocab)
            return corrupt(fmt::format("tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}",
                                       scores->count, n_vocab));
        for (size_t i = 0; i < n_vocab; ++i) vocab.scores[i] = static_cast<float>(GgufFile::array_float(*scores, i));
    } else if (file.find("tokenizer.ggml.scores")) {
        return corrupt("tokenizer.ggml.scores is not an array");
    }

    vocab.types.assign(n_vocab, TokenType::kNormal);
    if (const GgufArray* types = file.get_array("tokenizer.ggml.token_type")) {
        if (!is_numeric_type(types->elem_type)) return corrupt("tokenizer.ggml.token_type must be numeric");
        if (types->count != n_vocab)
            return corrupt(fmt::format("tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                                       types->count, n_vocab));
        for (size_t i = 0; i < n_vocab; ++i) {
            const int64_t t = GgufFile::array_int(*types, i);
            vocab.types[i] = (t >= 0 && t <= 6) ? static_cast<TokenType>(t) : TokenType::kUndefined;
        }
    } else if (file.find("tokenizer.ggml.token_type")) {
        return corrupt("tokenizer.ggml.token_type is not an array");
    }

    vocab.index.reserve(n_vocab * 2);
    for (size_t i = 0; i < n_vocab; ++i) vocab.index[vocab.texts[i]] = static_cast<TokenId>(i);

    // llama.cpp's defaults for SentencePiece files that omit the ids.
    auto bos = read_token_id(file, "tokenizer.ggml.bos_token_id", sentencepiece ? 1 : -1, n_vocab);
    if (!bos) return bos.error();
    auto eos = read_token_id(file, "tokenizer.ggml.eos_token_id", sentencepiece ? 2 : -1, n_vocab);
    if (!eos) return eos.error();
    auto unknown = read_token_id(file, "tokenizer.ggml.unknown_token_id", sentencepiece ? 0 : -1, n_vocab);
    if (!unknown) return unknown.error();
    auto padding = read_token_id(file, "tokenizer.ggml.padding_token_id", -1, n_vocab);
    if (!padding) return padding.error();
    auto end_of_turn = read_token_id(file, "tokenizer.ggml.eot_token_id", -1, n_vocab);
    if (!end_of_turn) return end_of_turn.error();
    auto end_of_message = read_token_id(file, "tokenizer.ggml.eom_token_id", -1, n_vocab);
    if (!end_of_message) return end_of_message.error();
    vocab.bos = *bos;
    vocab.eos = *eos;
    vocab.unknown = *unknown;
    vocab.padding = *padding;
    vocab.end_of_turn = *end_of_turn;

    vocab.add_bos = read_flag(file, "tokenizer.ggml.add_bos_token", sentencepiece) && vocab.bos >= 0;
    vocab.add_eos = read_flag(file, "tokenizer.ggml.add_eos_token", false) && vocab.eos >= 0;
    vocab.add_space_prefix = sentencepiece && read_flag(file, "tokenizer.ggml.add_space_prefix", true);

    for (size_t i = 0; i < n_vocab; ++i) {
        const TokenType type = vocab.types[i];
        const bool special =
            type == TokenType::kControl || type == TokenType::kUserDefined || type == TokenType::kUnknown;
        if (special && !vocab.texts[i].empty()) vocab.specials_longest_first.push_back(static_cast<TokenId>(i));
    }
    std::stable_sort(vocab.specials_longest_first.begin(), vocab.specials_longest_first.end(),
                     [&](TokenId a, TokenId b) { return vocab.texts[a].size() > vocab.texts[b].size(); });

    vocab.end_of_generation.assign(n_vocab, 0);
    for (TokenId id : {vocab.eos, vocab.end_of_turn, *end_of_message})
        if (id >= 0) vocab.end_of_generation[id] = 1;
    for (std::string_view text : kEndOfTurnTexts) {
        auto it = vocab.index.find(text);
        if (it != vocab.index.end() && vocab.types[it->second] != TokenType::kByte)
            vocab.end_of_generation[it->second] = 1;
    }
    return vocab;
}

Result<StringMap<int32_t>> load_merges(const GgufFile& file) {
    const GgufArray* merges = file.get_array("tokenizer.ggml.merges");
    if (!merges) return corrupt("tokenizer.ggml.merges is missing: a gpt2 (byte-level BPE) tokenizer needs its merges");
    if (merges->elem_type != GgufValueType::STRING || merges->strings.size() != merges->count)
        return corrupt("tokenizer.ggml.merges must be an array of strings");
    StringMap<int32_t> ranks;
    ranks.reserve(merges->count * 2);
    for (size_t i = 0; i < merges->count; ++i) {
        std::string_view merge = merges->strings[i];
        // The separator is the first space after the first character (a left part never is empty).
        const size_t space = merge.find(' ', 1);
        if (space == std::string_view::npos || space + 1 >= merge.size())
            return corrupt(fmt::format("tokenizer.ggml.merges[{}] \"{}\" is not of the form \"left right\"", i,
                                       sanitize_utf8(merge.substr(0, 64))));
        ranks.emplace(std::string(merge), static_cast<int32_t>(i));  // the first rank of a duplicate wins
    }
    return ranks;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& file) {
    auto model = file.get_string("tokenizer.ggml.model");
    if (!model) {
        if (file.find("tokenizer.ggml.model"))
            return corrupt("tokenizer.ggml.model is not a string");
        return make_error(ErrorCode::kNotFound,
                          "tokenizer.ggml.model is missing: the file has no tokenizer (expected \"llama\" or \"gpt2\")");
    }
    if (*model == "llama") {
        auto vocab = load_vocabulary(file, /*sentencepiece=*/true);
        if (!vocab) return vocab.error();
        return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(vocab.value())));
    }
    if (*model == "gpt2") {
        auto vocab = load_vocabulary(file, /*sentencepiece=*/false);
        if (!vocab) return vocab.error();
        auto merges = load_merges(file);
        if (!merges) return merges.error();
        const std::string_view pre = file.get_string("tokenizer.ggml.pre").value_or("default");
        const PreTokenizerKind pre_kind = pre_tokenizer_from_name(pre);
        const bool ignore_merges = pre_kind == PreTokenizerKind::kLlama3;
        return std::unique_ptr<Tokenizer>(
            new ByteBpeTokenizer(std::move(vocab.value()), std::move(merges.value()), pre_kind, ignore_merges));
    }
    return make_error(ErrorCode::kUnsupported,
                      fmt::format("tokenizer.ggml.model \"{}\" is not supported (expected \"llama\" or \"gpt2\")",
                                  sanitize_utf8(model->substr(0, 64))));
}

// ---- Streaming ------------------------------------------------------------------

std::string StreamingDetokenizer::feed(TokenId id) {
    append_decoded_piece(tok_, id, /*render_special=*/false, after_special_, pending_);
    const size_t complete = complete_utf8_prefix_length(pending_);
    if (complete == 0) return {};
    std::string ready = sanitize_utf8(std::string_view(pending_).substr(0, complete));
    pending_.erase(0, complete);
    return ready;
}

std::string StreamingDetokenizer::flush() {
    std::string rest = sanitize_utf8(pending_);
    pending_.clear();
    return rest;
}

}  // namespace assistd::engine
