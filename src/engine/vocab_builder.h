#pragma once
// Builds a small but working tokenizer vocabulary into GGUF metadata, for
// `assistd model random` and for tests that need a model that can encode and
// decode text without a real vocabulary file.
#include <cstddef>

namespace assistd::engine {

class GgufWriter;

enum class SyntheticVocabKind { kSentencePiece, kByteBpe };

// Minimum sizes: the special tokens, the 256 byte tokens and a few pieces must fit.
inline constexpr size_t kMinSyntheticSentencePieceVocab = 512;
inline constexpr size_t kMinSyntheticByteBpeVocab = 300;

// Writes tokenizer.ggml.* metadata for a working vocabulary of exactly vocab_size tokens
// (vocab_size >= 512 for SentencePiece, >= 300 for BPE; smaller sizes are raised to the
// minimum): special tokens (SentencePiece: <unk>, <s>, </s>, <|im_start|>, <|im_end|>;
// BPE: <|endoftext|>, <|im_start|>, <|im_end|>), the 256 byte tokens (SentencePiece:
// <0x00>..<0xFF>), common English pieces (letters, frequent bigrams and words with "▁" or
// "Ġ"), then unused padding tokens up to vocab_size. Also writes a ChatML
// tokenizer.chat_template. The output depends only on the arguments.
void write_synthetic_vocab(GgufWriter& writer, SyntheticVocabKind kind, size_t vocab_size);

}  // namespace assistd::engine
