// Unicode helpers for the tokenizer (internal): UTF-8 decoding and validation, the character classes of the
// GPT-2 pre-tokenisation regex, Rust's `from_utf8_lossy`.
//
// Classes follow the regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`:
//   kLetter = \p{L} (Lu Ll Lt Lm Lo), kNumber = \p{N} (Nd Nl No), kSpace = \s = the White_Space property
//   (utf8proc has no White_Space, hence the explicit list in unicode.cpp), kOther = everything else.
// Categories come from utf8proc (Unicode 15.0 in Debian 12's 2.8.0) plus a table of the Unicode 16.0
// letters and numbers, so that every code point is classified as HF tokenizers 0.23 does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace levanter::data::unicode {

enum CharClass : std::uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// Class of any code point; BMP code points come from a 64 KiB table built on first use.
CharClass char_class(char32_t cp);

// The Unicode White_Space property (what Rust's char::is_whitespace and the regex `\s` use).
bool is_white_space(char32_t cp);

// Rust regex `\w` (added tokens with single_word): Alphabetic, marks, decimal digits, connector punctuation,
// join controls. Alphabetic is approximated by \p{L} and \p{Nl} (utf8proc has no Other_Alphabetic).
bool is_word_char(char32_t cp);

// Decodes one code point from *valid* UTF-8 at p; returns its length in bytes (1-4).
inline int decode_utf8(const unsigned char* p, char32_t* cp) {
  unsigned c = p[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c < 0xE0) {
    *cp = ((c & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    return 2;
  }
  if (c < 0xF0) {
    *cp = ((c & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return 3;
  }
  *cp = ((c & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
  return 4;
}

// Length of the UTF-8 sequence that starts with lead byte c (valid input assumed).
inline int utf8_length(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// Byte offset of the first byte that is not part of well-formed UTF-8 (no overlongs, no surrogates, nothing
// above U+10FFFF), or std::string_view::npos when all of s is valid.
std::size_t find_invalid_utf8(std::string_view s);

// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

void append_utf8(std::string& out, char32_t cp);

}  // namespace levanter::data::unicode
