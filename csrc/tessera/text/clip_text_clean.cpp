// Caption cleaning after open_clip's tokenizer.py (basic_clean, whitespace_clean, lower) and
// the text fixers of ftfy 6.3 (__init__.fix_text, fixes.py, chardata.py).
#include "tessera/text/clip_text_clean.h"

#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <stdexcept>
#include <unordered_map>

#include "tessera/text/html_unescape.h"
#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// ftfy splits its input after each '\n' and, for safety, every million code points.
constexpr size_t kMaxSegment = 1000000;

icu::UnicodeString to_icu(std::u32string_view s) {
  return icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                       static_cast<int32_t>(s.size()));
}

std::u32string from_icu(const icu::UnicodeString& u) {
  std::u32string out(static_cast<size_t>(u.countChar32()), U'\0');
  UErrorCode status = U_ZERO_ERROR;
  u.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  return out;
}

const icu::Normalizer2& normalizer(bool compat) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = compat ? icu::Normalizer2::getNFKCInstance(status)
                                     : icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || n == nullptr)
    throw std::runtime_error(std::string("ICU normalizer unavailable: ") + u_errorName(status));
  return *n;
}

std::u32string nfc(std::u32string s) {
  const icu::Normalizer2& n = normalizer(false);
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString u = to_icu(s);
  if (n.isNormalized(u, status) && U_SUCCESS(status)) return s;
  status = U_ZERO_ERROR;
  icu::UnicodeString out = n.normalize(u, status);
  return U_SUCCESS(status) ? from_icu(out) : s;
}

// ftfy's WIDTH_MAP: U+3000 -> ' ', and U+FF01..U+FFEF -> their NFKC form where it differs.
const std::unordered_map<char32_t, std::u32string>& width_map() {
  static const auto map = [] {
    std::unordered_map<char32_t, std::u32string> m{{0x3000, U" "}};
    for (char32_t c = 0xFF01; c < 0xFFF0; ++c) {
      UErrorCode status = U_ZERO_ERROR;
      std::u32string one(1, c);
      std::u32string alt = from_icu(normalizer(true).normalize(to_icu(one), status));
      if (U_SUCCESS(status) && alt != one) m.emplace(c, std::move(alt));
    }
    return m;
  }();
  return map;
}

// ftfy's LIGATURES: Latin typographic ligatures and digraphs only.
const char32_t* ligature(char32_t c) {
  switch (c) {
    case 0x132: return U"IJ";  case 0x133: return U"ij";  case 0x149: return U"\u02BCn";
    case 0x1F1: return U"DZ";  case 0x1F2: return U"Dz";  case 0x1F3: return U"dz";
    case 0x1C4: return U"D\u017D"; case 0x1C5: return U"D\u017E"; case 0x1C6: return U"d\u017E";
    case 0x1C7: return U"LJ";  case 0x1C8: return U"Lj";  case 0x1C9: return U"lj";
    case 0x1CA: return U"NJ";  case 0x1CB: return U"Nj";  case 0x1CC: return U"nj";
    case 0xFB00: return U"ff"; case 0xFB01: return U"fi"; case 0xFB02: return U"fl";
    case 0xFB03: return U"ffi"; case 0xFB04: return U"ffl"; case 0xFB05: return U"\u017Ft";
    case 0xFB06: return U"st";
    default: return nullptr;
  }
}

// ftfy's remove_control_chars set.
bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F ||
         (c >= 0x206A && c <= 0x206F) || c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

// Python's str.isspace() set, which str.split() and str.strip() use.
bool is_py_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The per-character fixers, in ftfy's order: C1 controls, ligatures, width, quotes, line
// breaks. Each one sees the previous one's output, as ftfy's successive passes do.
std::u32string fix_characters(const std::u32string& s) {
  std::u32string a;
  a.reserve(s.size());
  for (char32_t c : s) {
    c = cp1252_c1(c);
    if (const char32_t* lig = ligature(c)) a.append(lig);
    else a.push_back(c);
  }
  std::u32string b;
  b.reserve(a.size());
  const auto& wm = width_map();
  for (char32_t c : a) {
    auto it = c >= 0x3000 ? wm.find(c) : wm.end();
    if (it != wm.end()) b.append(it->second);
    else b.push_back(c);
  }
  std::u32string out;
  out.reserve(b.size());
  for (size_t i = 0; i < b.size(); ++i) {
    char32_t c = b[i];
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
    if (c == U'\r' && i + 1 < b.size() && b[i + 1] == U'\n') continue;  // CRLF -> LF
    if (c == U'\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = U'\n';
    out.push_back(c);
  }
  return out;
}

// ftfy's remove_terminal_escapes ("ESC [ (digit|;)* letter") and remove_control_chars.
std::u32string strip_escapes_and_controls(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == U'[') {
      size_t j = i + 2;
      while (j < s.size() && (s[j] == U';' || u_charType(static_cast<UChar32>(s[j])) ==
                                                    U_DECIMAL_DIGIT_NUMBER))
        ++j;
      if (j < s.size() && ((s[j] >= U'a' && s[j] <= U'z') || (s[j] >= U'A' && s[j] <= U'Z'))) {
        i = j + 1;
        continue;
      }
    }
    if (!is_removed_control(s[i])) out.push_back(s[i]);
    ++i;
  }
  return out;
}

std::u32string fix_segment(std::u32string seg, bool unescape) {
  // ftfy repeats its whole pass until the text stops changing (e.g. "&amp;ldquo;" needs two
  // rounds: one to unescape twice over, one to straighten the quote that appears).
  while (true) {
    std::u32string orig = seg;
    if (unescape) seg = ftfy_unescape_html(seg);
    seg = fix_characters(seg);
    seg = strip_escapes_and_controls(seg);
    seg = nfc(std::move(seg));
    if (seg == orig) return seg;
  }
}

std::u32string ftfy_fix_text(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;  // "auto": off for good once a segment contains '<'
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find(U'\n', pos);
    end = end == std::u32string_view::npos ? text.size() : end + 1;
    end = std::min(end, pos + kMaxSegment);
    std::u32string_view seg = text.substr(pos, end - pos);
    if (unescape && seg.find(U'<') != std::u32string_view::npos) unescape = false;
    out += fix_segment(std::u32string(seg), unescape);
    pos = end;
  }
  return out;
}

std::u32string collapse_whitespace(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (is_py_space(s[i])) {
      ++i;
      continue;
    }
    if (!out.empty()) out.push_back(U' ');
    while (i < s.size() && !is_py_space(s[i])) out.push_back(s[i++]);
  }
  return out;
}

}  // namespace

bool clip_text_is_plain_ascii(std::string_view s) {
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7F) {
      if (c == '&') return false;
    } else if (c != '\t' && c != '\n' && c != '\f' && c != '\r') {
      return false;
    }
  }
  return true;
}

std::string clip_clean_text(std::string_view utf8_text) {
  if (clip_text_is_plain_ascii(utf8_text)) {
    std::string out;
    out.reserve(utf8_text.size());
    for (size_t i = 0; i < utf8_text.size();) {
      auto c = static_cast<unsigned char>(utf8_text[i]);
      if (c <= 0x20) {
        ++i;
        continue;
      }
      if (!out.empty()) out.push_back(' ');
      for (; i < utf8_text.size() && static_cast<unsigned char>(utf8_text[i]) > 0x20; ++i) {
        c = static_cast<unsigned char>(utf8_text[i]);
        out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
      }
    }
    return out;
  }
  std::u32string t = ftfy_fix_text(utf8::decode(utf8_text));
  t = collapse_whitespace(html_unescape(html_unescape(t)));
  icu::UnicodeString u = to_icu(t);
  u.toLower(icu::Locale::getRoot());
  std::string out;
  u.toUTF8String(out);
  return out;
}

}  // namespace tessera::text
