// SentencePiece-style tokenizer ("llama"): characters merged pairwise by the
// score of the merged piece, bytes for what the vocabulary lacks.
#include <queue>

#include <fmt/format.h>

#include "engine/tokenizer_impl.h"

namespace assistd::engine::tokenizer_detail {

namespace {

constexpr std::string_view kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁"

// A run of text in the working buffer; merged-away symbols have length 0.
struct Symbol {
    uint32_t start = 0;
    uint32_t length = 0;
    int32_t prev = -1;
    int32_t next = -1;
};

struct Bigram {
    int32_t left = 0;
    int32_t right = 0;
    float score = 0.0f;
    uint32_t length = 0;  // bytes of the merged piece when queued
};

// Highest score first; among equal scores the leftmost pair.
struct BigramOrder {
    bool operator()(const Bigram& a, const Bigram& b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
};

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(Vocabulary vocab) : TokenizerBase(std::move(vocab)) {
    for (int byte = 0; byte < 256; ++byte) {
        auto it = vocab_.index.find(fmt::format("<0x{:02X}>", byte));
        byte_tokens_[byte] = it != vocab_.index.end() ? it->second : -1;
    }
}

void SentencePieceTokenizer::append_bytes(std::string_view bytes, std::vector<TokenId>& out) const {
    for (char c : bytes) {
        const TokenId id = byte_tokens_[static_cast<uint8_t>(c)];
        if (id >= 0) {
            out.push_back(id);
        } else if (vocab_.unknown >= 0) {
            out.push_back(vocab_.unknown);
        }
    }
}

void SentencePieceTokenizer::encode_fragment(std::string_view text, bool after_special,
                                             std::vector<TokenId>& out) const {
    // Spaces become "▁"; the encoder also puts one before the text.
    std::string escaped;
    escaped.reserve(text.size() + 8);
    if (vocab_.add_space_prefix && after_special) escaped.append(kSpaceMarker);
    for (char c : text) {
        if (c == ' ') {
            escaped.append(kSpaceMarker);
        } else {
            escaped.push_back(c);
        }
    }
    if (escaped.empty()) return;

    std::vector<Symbol> symbols;
    symbols.reserve(escaped.size());
    for (size_t offset = 0; offset < escaped.size();) {
        // Characters of valid UTF-8 as SentencePiece splits them; an invalid byte is a
        // character of its own so it cannot swallow a following "▁".
        const size_t length = decode_utf8(escaped, offset).length;
        Symbol symbol;
        symbol.start = static_cast<uint32_t>(offset);
        symbol.length = static_cast<uint32_t>(length);
        symbol.prev = static_cast<int32_t>(symbols.size()) - 1;
        offset += length;
        symbol.next = offset == escaped.size() ? -1 : static_cast<int32_t>(symbols.size()) + 1;
        symbols.push_back(symbol);
    }

    std::vector<Bigram> queue_storage;
    queue_storage.reserve(symbols.size());
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue(BigramOrder{}, std::move(queue_storage));
    const std::string_view buffer = escaped;
    auto try_add_bigram = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const Symbol& l = symbols[left];
        const Symbol& r = symbols[right];
        auto it = vocab_.index.find(buffer.substr(l.start, l.length + r.length));
        if (it == vocab_.index.end()) return;
        queue.push(Bigram{left, right, vocab_.scores[it->second], l.length + r.length});
    };
    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add_bigram(i - 1, i);

    while (!queue.empty()) {
        const Bigram bigram = queue.top();
        queue.pop();
        Symbol& left = symbols[bigram.left];
        Symbol& right = symbols[bigram.right];
        // Stale: one side was merged into something else since this pair was queued.
        if (left.length == 0 || right.length == 0 || left.length + right.length != bigram.length) continue;
        left.length += right.length;
        right.length = 0;
        left.next = right.next;
        if (right.next >= 0) symbols[right.next].prev = bigram.left;
        try_add_bigram(left.prev, bigram.left);
        try_add_bigram(bigram.left, left.next);
    }

    for (int32_t i = 0; i != -1; i = symbols[i].next) {
        const std::string_view piece = buffer.substr(symbols[i].start, symbols[i].length);
        auto it = vocab_.index.find(piece);
        if (it != vocab_.index.end()) {
            out.push_back(it->second);
        } else {
            append_bytes(piece, out);
        }
    }
}

std::string SentencePieceTokenizer::token_to_piece(TokenId id, bool render_special) const {
    if (!vocab_.valid(id)) return {};
    const std::string& text = vocab_.texts[id];
    switch (vocab_.types[id]) {
        case TokenType::kControl:
        case TokenType::kUnknown:
            return render_special ? text : std::string();
        case TokenType::kUserDefined:
            return text;
        case TokenType::kNormal: {
            std::string piece;
            piece.reserve(text.size());
            for (size_t i = 0; i < text.size();) {
                if (text.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
                    piece.push_back(' ');
                    i += kSpaceMarker.size();
                } else {
                    piece.push_back(text[i++]);
                }
            }
            return piece;
        }
        case TokenType::kByte: {
            // "<0xNN>"
            if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>') {
                unsigned value = 0;
                for (size_t i = 3; i < 5; ++i) {
                    const char c = text[i];
                    value <<= 4;
                    if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
                    else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
                    else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
                    else return {};
                }
                return std::string(1, static_cast<char>(value));
            }
            return {};
        }
        case TokenType::kUnused:
        case TokenType::kUndefined:
            return {};
    }
    return {};
}

}  // namespace assistd::engine::tokenizer_detail
