#pragma once
// How the graph finds the entities a message mentions: names are compared as
// words — runs of letters and digits, lower-cased (Unicode-aware, through the
// C library's C.UTF-8 tables), joined by single spaces — so "Ada L." in a row
// and "ada l" in a message, "7203.T" and "7203 t", are the same name. Values
// with a letter and 1 to 8 words are names; numbers and long texts are not.
#include <string>
#include <string_view>
#include <vector>

namespace assistd::knowledge {

// The words of a text, normalized.
std::vector<std::string> name_words(std::string_view text);
// A value's name form ("" when the value is not a name).
std::string name_of(std::string_view value);

}  // namespace assistd::knowledge
