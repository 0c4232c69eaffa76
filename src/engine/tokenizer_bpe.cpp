// Byte-level BPE tokenizer ("gpt2"): text is split into words by the model's
// pre-tokenizer, each word's bytes are mapped to printable code points and
// merged by rank.
#include <queue>

#include "engine/tokenizer_impl.h"

namespace assistd::engine::tokenizer_detail {

namespace {

bool gpt2_byte_is_printable(uint32_t byte) {
    return (byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

struct Symbol {
    uint32_t start = 0;
    uint32_t length = 0;
    int32_t prev = -1;
    int32_t next = -1;
};

struct Bigram {
    int32_t left = 0;
    int32_t right = 0;
    int32_t rank = 0;
    uint32_t length = 0;
};

// Lowest rank first; among equal ranks the leftmost pair.
struct BigramOrder {
    bool operator()(const Bigram& a, const Bigram& b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
};

}  // namespace

uint32_t gpt2_byte_to_code_point(uint8_t byte) {
    if (gpt2_byte_is_printable(byte)) return byte;
    uint32_t rank = 0;
    for (uint32_t b = 0; b < byte; ++b)
        if (!gpt2_byte_is_printable(b)) ++rank;
    return 256 + rank;
}

ByteBpeTokenizer::ByteBpeTokenizer(Vocabulary vocab, StringMap<int32_t> merge_ranks, PreTokenizerKind pre_tokenizer,
                                   bool ignore_merges)
    : TokenizerBase(std::move(vocab)),
      merge_ranks_(std::move(merge_ranks)),
      pre_tokenizer_(pre_tokenizer),
      ignore_merges_(ignore_merges) {
    for (int byte = 0; byte < 256; ++byte) {
        const uint32_t cp = gpt2_byte_to_code_point(static_cast<uint8_t>(byte));
        append_utf8(byte_images_[byte], cp);
        image_bytes_[cp] = static_cast<uint8_t>(byte);
    }
}

void ByteBpeTokenizer::encode_fragment(std::string_view text, bool /*after_special*/,
                                       std::vector<TokenId>& out) const {
    std::vector<std::string_view> words;
    pretokenize(pre_tokenizer_, text, words);
    std::string mapped;
    for (std::string_view word : words) {
        mapped.clear();
        for (char c : word) mapped += byte_images_[static_cast<uint8_t>(c)];
        encode_word(mapped, out);
    }
}

void ByteBpeTokenizer::encode_word(std::string_view word, std::vector<TokenId>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
        // Llama 3 takes a whole word that is in the vocabulary as it is.
        auto it = vocab_.index.find(word);
        if (it != vocab_.index.end()) {
            out.push_back(it->second);
            return;
        }
    }
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    for (size_t offset = 0; offset < word.size();) {
        const size_t length = std::min(utf8_sequence_length(static_cast<uint8_t>(word[offset])), word.size() - offset);
        Symbol symbol;
        symbol.start = static_cast<uint32_t>(offset);
        symbol.length = static_cast<uint32_t>(length);
        symbol.prev = static_cast<int32_t>(symbols.size()) - 1;
        offset += length;
        symbol.next = offset == word.size() ? -1 : static_cast<int32_t>(symbols.size()) + 1;
        symbols.push_back(symbol);
    }

    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    std::string key;
    auto try_add_bigram = [&](int32_t left, int32_t right) {
        if (left < 0 || right < 0) return;
        const Symbol& l = symbols[left];
        const Symbol& r = symbols[right];
        key.assign(word.substr(l.start, l.length));
        key.push_back(' ');
        key.append(word.substr(r.start, r.length));
        auto it = merge_ranks_.find(key);
        if (it == merge_ranks_.end()) return;
        queue.push(Bigram{left, right, it->second, l.length + r.length});
    };
    for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add_bigram(i - 1, i);

    while (!queue.empty()) {
        const Bigram bigram = queue.top();
        queue.pop();
        Symbol& left = symbols[bigram.left];
        Symbol& right = symbols[bigram.right];
        if (left.length == 0 || right.length == 0 || left.next != bigram.right ||
            left.length + right.length != bigram.length)
            continue;
        left.length += right.length;
        right.length = 0;
        left.next = right.next;
        if (right.next >= 0) symbols[right.next].prev = bigram.left;
        try_add_bigram(left.prev, bigram.left);
        try_add_bigram(bigram.left, left.next);
    }

    for (int32_t i = 0; i != -1; i = symbols[i].next) {
        const std::string_view piece = word.substr(symbols[i].start, symbols[i].length);
        auto it = vocab_.index.find(piece);
        if (it != vocab_.index.end()) {
            out.push_back(it->second);
            continue;
        }
        // Not in the vocabulary: one token per byte image, skipping what is missing.
        for (size_t offset = 0; offset < piece.size();) {
            const size_t length =
                std::min(utf8_sequence_length(static_cast<uint8_t>(piece[offset])), piece.size() - offset);
            auto byte_token = vocab_.index.find(piece.substr(offset, length));
            if (byte_token != vocab_.index.end()) {
                out.push_back(byte_token->second);
            } else if (vocab_.unknown >= 0) {
                out.push_back(vocab_.unknown);
            }
            offset += length;
        }
    }
}

std::string ByteBpeTokenizer::token_to_piece(TokenId id, bool render_special) const {
    if (!vocab_.valid(id)) return {};
    const std::string& text = vocab_.texts[id];
    switch (vocab_.types[id]) {
        case TokenType::kControl:
        case TokenType::kUnknown:
            return render_special ? text : std::string();
        case TokenType::kUserDefined:
            return text;
        case TokenType::kNormal: {
            // Map the printable code points back to the bytes they stand for.
            std::string piece;
            piece.reserve(text.size());
            for (size_t pos = 0; pos < text.size();) {
                const DecodedCodePoint c = decode_utf8(text, pos);
                auto it = c.valid ? image_bytes_.find(c.code_point) : image_bytes_.end();
                if (it != image_bytes_.end()) {
                    piece.push_back(static_cast<char>(it->second));
                } else {
                    piece.append(text, pos, c.length);
                }
                pos += c.length;
            }
            return piece;
        }
        case TokenType::kByte:
        case TokenType::kUnused:
        case TokenType::kUndefined:
            return {};
    }
    return {};
}

}  // namespace assistd::engine::tokenizer_detail
