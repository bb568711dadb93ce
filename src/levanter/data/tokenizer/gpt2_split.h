// The GPT-2 pre-tokenisation regex as a hand-written scanner (internal header).
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// How the alternatives resolve at a position i (leftmost-first alternation, greedy runs):
//   1. `'` followed by s t m d, or by re ve ll (case-sensitive): the contraction.
//   2. U+0020 followed by a non-space char c: the space plus the run of c's class (letters, numbers, or
//      "other" = not space/letter/number). The run of "other" may contain `'` (no contraction inside a run).
//   3. A letter / number / other char: the run of its class.
//   4. A run of k White_Space chars: all k at the end of the text; otherwise k-1 when k >= 2 (the
//      lookahead `(?!\S)` gives back the last one, which then starts the next piece, e.g. " word"); else 1.
// The input must be valid UTF-8 (checked by the caller). emit(begin, end) gets byte offsets of each piece;
// pieces cover the input exactly, in order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "levanter/data/tokenizer/unicode.h"

namespace levanter::data::detail {

// Classes of the ASCII characters (a hot path: most text is ASCII).
struct AsciiClasses {
  std::uint8_t cls[128];
  constexpr AsciiClasses() : cls() {
    for (int c = 0; c < 128; ++c) {
      std::uint8_t k = unicode::kOther;
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = unicode::kLetter;
      if (c >= '0' && c <= '9') k = unicode::kNumber;
      if ((c >= 0x09 && c <= 0x0D) || c == ' ') k = unicode::kSpace;
      cls[c] = k;
    }
  }
};
inline constexpr AsciiClasses kAsciiClasses{};

// Class and byte length of the character at p (valid UTF-8).
inline unicode::CharClass class_at(const unsigned char* p, int* len) {
  if (*p < 0x80) {
    *len = 1;
    return static_cast<unicode::CharClass>(kAsciiClasses.cls[*p]);
  }
  char32_t cp;
  *len = unicode::decode_utf8(p, &cp);
  return unicode::char_class(cp);
}

// End of the run of characters of class k that starts at i (k is not kSpace).
inline std::size_t run_end(const unsigned char* s, std::size_t i, std::size_t n, unicode::CharClass k) {
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      if (kAsciiClasses.cls[c] != k) break;
      ++i;
      continue;
    }
    int len;
    if (class_at(s + i, &len) != k) break;
    i += len;
  }
  return i;
}

template <class Emit>
void gpt2_split(const char* text, std::size_t n, Emit&& emit) {
  const auto* s = reinterpret_cast<const unsigned char*>(text);
  std::size_t i = 0;
  while (i < n) {
    const std::size_t start = i;
    const unsigned char c = s[i];
    if (c == '\'' && i + 1 < n) {
      unsigned char d = s[i + 1];
      if (d == 's' || d == 't' || d == 'm' || d == 'd') {
        emit(start, i + 2);
        i += 2;
        continue;
      }
      if (i + 2 < n) {
        unsigned char e = s[i + 2];
        if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) {
          emit(start, i + 3);
          i += 3;
          continue;
        }
      }
    }
    int len;
    unicode::CharClass k = class_at(s + i, &len);
    if (c == ' ' && i + 1 < n) {
      int len2;
      unicode::CharClass k2 = class_at(s + i + 1, &len2);
      if (k2 != unicode::kSpace) {
        i = run_end(s, i + 1 + len2, n, k2);
        emit(start, i);
        continue;
      }
    }
    if (k != unicode::kSpace) {
      i = run_end(s, i + len, n, k);
      emit(start, i);
      continue;
    }
    // A run of White_Space: remember where its last character starts.
    std::size_t last = i, count = 0;
    while (i < n) {
      int l;
      if (class_at(s + i, &l) != unicode::kSpace) break;
      last = i;
      i += l;
      ++count;
    }
    if (i < n && count >= 2) i = last;  // (?!\S): leave the last space for the next piece
    emit(start, i);
  }
}

}  // namespace levanter::data::detail
