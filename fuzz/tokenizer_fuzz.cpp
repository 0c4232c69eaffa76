// Tokenizers on arbitrary text: encoding never crashes, ids stay in the
// vocabulary, and decoding what was encoded gives back valid UTF-8 input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "engine/tokenizer.h"
#include "engine/vocab_builder.h"

namespace {

using namespace assistd::engine;

struct Vocab {
    std::vector<uint8_t> bytes;
    std::unique_ptr<GgufFile> file;
    std::unique_ptr<Tokenizer> tok;
};

std::unique_ptr<Vocab> make_vocab(SyntheticVocabKind kind, size_t size) {
    auto v = std::make_unique<Vocab>();
    GgufWriter w;
    write_synthetic_vocab(w, kind, size);
    v->bytes = w.to_bytes();
    v->file = std::move(GgufFile::parse(v->bytes, "vocab").value());
    v->tok = std::move(Tokenizer::from_gguf(*v->file).value());
    return v;
}

bool valid_utf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
        i += n;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const auto spm = make_vocab(SyntheticVocabKind::kSentencePiece, 1024);
    static const auto bpe = make_vocab(SyntheticVocabKind::kByteBpe, 1024);
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const Vocab* v : {spm.get(), bpe.get()}) {
        for (bool special : {false, true}) {
            // With BOS, SentencePiece's decoder drops the space its encoder added.
            const auto ids = v->tok->encode(text, true, special);
            for (TokenId id : ids)
                if (id < 0 || static_cast<size_t>(id) >= v->tok->vocab_size()) std::abort();
            // "▁" (U+2581) is SentencePiece's space: it decodes as ' ', by design.
            if (!special && valid_utf8(text) && text.find("\xe2\x96\x81") == std::string_view::npos) {
                if (v->tok->decode(ids) != text) std::abort();
            }
            StreamingDetokenizer d(*v->tok);
            std::string streamed;
            for (TokenId id : ids) streamed += d.feed(id);
            streamed += d.flush();
            if (!valid_utf8(streamed)) std::abort();
        }
    }
    return 0;
}
