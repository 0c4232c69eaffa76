// Pre-tokenizers of byte-level BPE models: hand-written equivalents of the
// models' split regexes (which need \p{L} and \p{N}, beyond std::regex).
#include <algorithm>
#include <span>

#include "engine/tokenizer_impl.h"

namespace assistd::engine::tokenizer_detail {

namespace {

struct CodePointRange {
    uint32_t first;
    uint32_t last;
};

// Letters (\p{L}) of the common scripts. Combining marks are not letters, as in the regexes.
constexpr CodePointRange kLetterRanges[] = {
    {0x41, 0x5A}, {0x61, 0x7A}, {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6},
    {0xF8, 0x2C1}, {0x2C6, 0x2D1}, {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE},
    {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D}, {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x3F5},
    {0x3F7, 0x481}, {0x48A, 0x52F},                                          // Greek, Cyrillic
    {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588},                          // Armenian
    {0x5D0, 0x5EA}, {0x5EF, 0x5F2},                                          // Hebrew
    {0x620, 0x64A}, {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6}, {0x6EE, 0x6EF},
    {0x6FA, 0x6FC}, {0x6FF, 0x6FF},                                          // Arabic
    {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980},  // Devanagari
    {0x985, 0x9B9}, {0xA05, 0xA39}, {0xA85, 0xAB9}, {0xB05, 0xB39}, {0xB85, 0xBB9},  // Indic (approx.)
    {0xC05, 0xC39}, {0xC85, 0xCB9}, {0xD05, 0xD3A},
    {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46},                          // Thai
    {0xE81, 0xEB0}, {0xEB2, 0xEB3}, {0xEBD, 0xEC6},                          // Lao
    {0x10A0, 0x10C5}, {0x10D0, 0x10FA}, {0x10FC, 0x10FF},                    // Georgian
    {0x1100, 0x1248}, {0x13A0, 0x13F5}, {0x1401, 0x166C},                    // Hangul Jamo, Ethiopic, Cherokee, UCAS
    {0x1E00, 0x1F15}, {0x1F18, 0x1FBC}, {0x1FC2, 0x1FCC}, {0x1FD0, 0x1FDB}, {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FFC},
    {0x2071, 0x2071}, {0x207F, 0x207F}, {0x2090, 0x209C}, {0x2C00, 0x2CE4},
    {0x3005, 0x3006}, {0x3031, 0x3035}, {0x303B, 0x303C},
    {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF},  // Hiragana, Katakana
    {0x3105, 0x312F}, {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF},
    {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xA000, 0xA48C},                    // CJK, Yi
    {0xAC00, 0xD7A3}, {0xF900, 0xFAFF},                                      // Hangul syllables, CJK compat.
    {0xFF21, 0xFF3A}, {0xFF41, 0xFF5A}, {0xFF66, 0xFFDC},                    // fullwidth, halfwidth
};

constexpr CodePointRange kSupplementaryLetterRanges[] = {
    {0x10400, 0x1044F}, {0x20000, 0x2FA1F}, {0x30000, 0x323AF},
};

// Numbers (\p{N}): decimal digits of common scripts, super/subscripts, fractions, circled numbers.
constexpr CodePointRange kNumberRanges[] = {
    {0x30, 0x39}, {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9},
    {0x966, 0x96F}, {0x9E6, 0x9EF}, {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xBE6, 0xBF2},
    {0xC66, 0xC6F}, {0xCE6, 0xCEF}, {0xD66, 0xD6F}, {0xE50, 0xE59}, {0xED0, 0xED9},
    {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2189}, {0x2460, 0x249B},
    {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x3021, 0x3029}, {0xFF10, 0xFF19},
};

bool in_ranges(std::span<const CodePointRange> ranges, uint32_t cp) {
    // Ranges are sorted: binary search for the last range starting at or before cp.
    auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                               [](uint32_t value, const CodePointRange& r) { return value < r.first; });
    if (it == ranges.begin()) return false;
    --it;
    return cp <= it->last;
}

bool is_whitespace_code_point(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

constexpr uint32_t kInvalidByte = 0xFFFFFFFFu;

struct Char {
    uint32_t offset;
    uint32_t code_point;  // kInvalidByte for a byte that is not valid UTF-8
    CharClass cls;
};

// The text as characters, with helpers that answer "none" past the end like the regex would.
class CharStream {
public:
    explicit CharStream(std::string_view text) {
        chars_.reserve(text.size());
        for (size_t pos = 0; pos < text.size();) {
            const DecodedCodePoint c = decode_utf8(text, pos);
            if (c.valid) {
                chars_.push_back(Char{static_cast<uint32_t>(pos), c.code_point, classify_code_point(c.code_point)});
            } else {
                chars_.push_back(Char{static_cast<uint32_t>(pos), kInvalidByte, CharClass::kOther});
            }
            pos += c.length;
        }
        end_offset_ = static_cast<uint32_t>(text.size());
    }
    size_t size() const { return chars_.size(); }
    bool in_range(size_t i) const { return i < chars_.size(); }
    uint32_t code_point(size_t i) const { return in_range(i) ? chars_[i].code_point : kInvalidByte; }
    bool is(size_t i, CharClass cls) const { return in_range(i) && chars_[i].cls == cls; }
    bool is_letter(size_t i) const { return is(i, CharClass::kLetter); }
    bool is_number(size_t i) const { return is(i, CharClass::kNumber); }
    bool is_whitespace(size_t i) const { return is(i, CharClass::kWhitespace); }
    bool is_other(size_t i) const { return is(i, CharClass::kOther); }  // [^\s\p{L}\p{N}]
    bool is_newline(size_t i) const { return code_point(i) == '\r' || code_point(i) == '\n'; }
    uint32_t offset(size_t i) const { return in_range(i) ? chars_[i].offset : end_offset_; }

private:
    std::vector<Char> chars_;
    uint32_t end_offset_ = 0;
};

uint32_t ascii_lower(uint32_t cp) { return (cp >= 'A' && cp <= 'Z') ? cp + ('a' - 'A') : cp; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
size_t contraction_length(const CharStream& s, size_t i, bool case_insensitive) {
    if (s.code_point(i) != '\'') return 0;
    auto fold = [&](size_t k) { return case_insensitive ? ascii_lower(s.code_point(k)) : s.code_point(k); };
    const uint32_t next = fold(i + 1);
    if (next == 's' || next == 't' || next == 'm' || next == 'd') return 2;
    const uint32_t after = fold(i + 2);
    if ((next == 'r' && after == 'e') || (next == 'v' && after == 'e') || (next == 'l' && after == 'l')) return 3;
    return 0;
}

// Whitespace run at i: "\s+(?!\S)" leaves the last space for the next word; at the end it takes all.
size_t whitespace_length(const CharStream& s, size_t i) {
    size_t n = 0;
    while (s.is_whitespace(i + n)) ++n;
    if (n > 1 && s.in_range(i + n)) return n - 1;
    return n;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
void split_gpt2(const CharStream& s, size_t begin, size_t end, std::vector<size_t>& bounds) {
    size_t i = begin;
    while (i < end) {
        size_t n = contraction_length(s, i, /*case_insensitive=*/false);
        if (n == 0) {
            const size_t body = (s.code_point(i) == ' ') ? i + 1 : i;
            if (body < end && (s.is_letter(body) || s.is_number(body) || s.is_other(body))) {
                const CharClass cls = s.is_letter(body) ? CharClass::kLetter
                                      : s.is_number(body) ? CharClass::kNumber : CharClass::kOther;
                size_t j = body;
                while (j < end && s.is(j, cls)) ++j;
                n = j - i;
            } else if (s.is_whitespace(i)) {
                n = whitespace_length(s, i);
            } else {
                n = 1;
            }
        }
        n = std::min(n, end - i);
        i += n;
        bounds.push_back(i);
    }
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
void split_llama3(const CharStream& s, size_t max_digits, std::vector<size_t>& bounds) {
    size_t i = 0;
    const size_t end = s.size();
    while (i < end) {
        size_t n = contraction_length(s, i, /*case_insensitive=*/true);
        if (n > 0) {
            i += n;
            bounds.push_back(i);
            continue;
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (!s.is_newline(i) && !s.is_number(i) && (s.is_letter(i) || s.is_letter(i + 1))) {
            size_t j = i + 1;
            while (s.is_letter(j)) ++j;
            i = j;
            bounds.push_back(i);
            continue;
        }
        // \p{N}{1,max_digits}
        if (s.is_number(i)) {
            size_t j = i;
            while (s.is_number(j) && j - i < max_digits) ++j;
            i = j;
            bounds.push_back(i);
            continue;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        const size_t body = (s.code_point(i) == ' ') ? i + 1 : i;
        if (s.is_other(body)) {
            size_t j = body;
            while (s.is_other(j)) ++j;
            while (s.is_newline(j)) ++j;
            i = j;
            bounds.push_back(i);
            continue;
        }
        // \s*[\r\n]+ : whitespace up to and including its last newline
        size_t run = 0;
        size_t after_last_newline = 0;
        while (s.is_whitespace(i + run)) {
            if (s.is_newline(i + run)) after_last_newline = i + run + 1;
            ++run;
        }
        if (after_last_newline > 0) {
            i = after_last_newline;
        } else if (run > 0) {
            i += whitespace_length(s, i);
        } else {
            ++i;
        }
        bounds.push_back(i);
    }
}

}  // namespace

CharClass classify_code_point(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::kLetter;
        if (cp >= '0' && cp <= '9') return CharClass::kNumber;
        if (is_whitespace_code_point(cp)) return CharClass::kWhitespace;
        return CharClass::kOther;
    }
    if (is_whitespace_code_point(cp)) return CharClass::kWhitespace;
    if (in_ranges(kNumberRanges, cp)) return CharClass::kNumber;
    if (cp < 0x10000 ? in_ranges(kLetterRanges, cp) : in_ranges(kSupplementaryLetterRanges, cp))
        return CharClass::kLetter;
    return CharClass::kOther;
}

PreTokenizerKind pre_tokenizer_from_name(std::string_view name) {
    if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return PreTokenizerKind::kLlama3;
    if (name == "qwen2") return PreTokenizerKind::kQwen2;
    if (name == "smollm") return PreTokenizerKind::kSmolLm;
    return PreTokenizerKind::kGpt2;
}

void pretokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words) {
    words.clear();
    if (text.empty()) return;
    const CharStream s(text);
    std::vector<size_t> bounds;  // character index where each word ends
    bounds.reserve(s.size() / 2 + 1);
    switch (kind) {
        case PreTokenizerKind::kLlama3: split_llama3(s, 3, bounds); break;
        case PreTokenizerKind::kQwen2: split_llama3(s, 1, bounds); break;
        case PreTokenizerKind::kGpt2: split_gpt2(s, 0, s.size(), bounds); break;
        case PreTokenizerKind::kSmolLm: {
            // Every digit is a word of its own first; the GPT-2 split runs on what lies between.
            size_t i = 0;
            while (i < s.size()) {
                if (s.is_number(i)) {
                    bounds.push_back(++i);
                    continue;
                }
                size_t j = i;
                while (j < s.size() && !s.is_number(j)) ++j;
                split_gpt2(s, i, j, bounds);
                i = j;
            }
            break;
        }
    }
    size_t start_char = 0;
    for (size_t end_char : bounds) {
        const size_t from = s.offset(start_char);
        const size_t to = s.offset(end_char);
        if (to > from) words.push_back(text.substr(from, to - from));
        start_char = end_char;
    }
}

}  // namespace assistd::engine::tokenizer_detail
