#include "knowledge/names.h"

#include <locale.h>
#include <wctype.h>

#include "common/utf8.h"

namespace assistd::knowledge {
namespace {

constexpr size_t kMaxNameWords = 8;
constexpr size_t kMaxNameBytes = 96;

locale_t utf8_locale() {
    static const locale_t l = [] {
        locale_t made = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
        return made ? made : newlocale(LC_CTYPE_MASK, "C", static_cast<locale_t>(0));
    }();
    return l;
}

}  // namespace

std::vector<std::string> name_words(std::string_view text) {
    std::vector<std::string> words;
    std::string word;
    const locale_t l = utf8_locale();
    for (size_t i = 0; i < text.size();) {
        const auto b = static_cast<unsigned char>(text[i]);
        if (b < 0x80) {  // ASCII, the common case, without the locale's tables
            ++i;
            if ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')) {
                word += static_cast<char>(b);
            } else if (b >= 'A' && b <= 'Z') {
                word += static_cast<char>(b - 'A' + 'a');
            } else if (!word.empty()) {
                words.push_back(std::move(word));
                word.clear();
            }
            continue;
        }
        const auto d = decode_utf8(text, i);
        i += d.length;
        const auto c = static_cast<wint_t>(d.code_point);
        if (d.valid && (iswalnum_l(c, l) || (c >= 0x3040 && c <= 0x9fff))) {  // kana and CJK are letters here too
            append_utf8(word, static_cast<uint32_t>(towlower_l(c, l)));
        } else if (!word.empty()) {
            words.push_back(std::move(word));
            word.clear();
        }
    }
    if (!word.empty()) words.push_back(std::move(word));
    return words;
}

std::string name_of(std::string_view value) {
    const auto words = name_words(value);
    if (words.empty() || words.size() > kMaxNameWords) return "";
    std::string out;
    bool letter = false;
    const locale_t l = utf8_locale();
    for (const auto& w : words) {
        if (!out.empty()) out += ' ';
        out += w;
        for (size_t i = 0; i < w.size() && !letter;) {
            if (static_cast<unsigned char>(w[i]) < 0x80) {
                letter |= w[i] >= 'a' && w[i] <= 'z';
                ++i;
                continue;
            }
            const auto d = decode_utf8(w, i);
            i += d.length;
            letter |= iswalpha_l(static_cast<wint_t>(d.code_point), l) || (d.code_point >= 0x3040 && d.code_point <= 0x9fff);
        }
    }
    if (!letter || out.size() > kMaxNameBytes) return "";
    return out;
}

}  // namespace assistd::knowledge
