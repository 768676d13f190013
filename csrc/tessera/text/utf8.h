// UTF-8 helpers for the text tokenizers, following the Unicode Standard's "maximal subpart"
// rule (ch. 3, U+FFFD substitution), which is also what CPython's errors="replace" does.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::text::utf8 {

/// Decodes the code point at `s[i]` and advances `i`. An ill-formed sequence yields U+FFFD
/// and consumes only its longest valid prefix (at least one byte), so one bad byte never
/// swallows the well-formed characters after it.
///
///     size_t i = 0; char32_t c = utf8::next("é", i);  // c == 0xE9, i == 2
inline char32_t next(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  int need = 0;
  char32_t cp = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the *second* byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    ++i;
    return 0xFFFD;
  }
  size_t j = i + 1;
  for (int k = 0; k < need; ++k, ++j) {
    if (j >= s.size()) {
      i = j;
      return 0xFFFD;
    }
    const auto b = static_cast<unsigned char>(s[j]);
    if (b < lo || b > hi) {
      i = j;
      return 0xFFFD;
    }
    lo = 0x80, hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
  }
  i = j;
  return cp;
}

/// Appends the UTF-8 form of `cp` (assumed a valid scalar value) to `out`.
inline void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

/// Whole-string decode; ill-formed input becomes U+FFFD as in `next`.
inline std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(next(s, i));
  return out;
}

/// Whole-string encode.
inline std::string encode(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append(out, c);
  return out;
}

/// Re-encodes `s` with every ill-formed sequence replaced by U+FFFD.
inline std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) append(out, next(s, i));
  return out;
}

/// True when every byte is 7-bit.
inline bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

/// Whether `s` is well-formed UTF-8: a U+FFFD that `next` substituted is not three bytes
/// EF BF BD, a genuine one is.
inline bool valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    if (next(s, i) == 0xFFFD && s.compare(start, i - start, "\xEF\xBF\xBD") != 0) return false;
  }
  return true;
}

}  // namespace tessera::text::utf8
