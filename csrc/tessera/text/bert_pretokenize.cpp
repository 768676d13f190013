// BERT's BasicTokenizer after HF tokenizers 0.23: normalizers/bert.rs (BertNormalizer:
// clean text, pad CJK, strip accents, lower-case, in that order) and pre_tokenizers/bert.rs
// (split on whitespace, isolate punctuation), itself after google-research/bert.
//
// tokenizers takes its character classes from three places, of three Unicode versions, and
// equality with it (checked on every code point by tests/python/test_wordpiece.py) needs all
// three reproduced over ICU:
//  * categories (control/format/private-use, punctuation, non-spacing mark) from the
//    unicode_categories crate: Unicode 8.0. A character assigned later is in none of them
//    there, and five old ones have changed category since (kCategory8Exceptions below).
//  * NFD from the unicode-normalization-alignments crate: Unicode 9.0. Later characters are
//    neither decomposed (U+11938) nor reordered by combining class.
//  * whitespace and lower-casing from Rust's std: the newest Unicode, past this ICU's for
//    the case pairs of Unicode 16/17 (kNewerLowercase).
#include "tessera/text/bert_pretokenize.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include <array>
#include <stdexcept>

#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// Assigned in Unicode <= 8.0 (unassigned code points have age 0.0 and category Cn).
bool in_unicode_8(char32_t c) {
  UVersionInfo v;
  u_charAge(static_cast<UChar32>(c), v);
  return v[0] < 8 || (v[0] == 8 && v[1] == 0);
}

uint32_t category_mask(char32_t c) { return U_MASK(u_charType(static_cast<UChar32>(c))); }

// Non-spacing mark as of Unicode 8.0: U+1734 was Mn then (Mc now); U+1885/6 (Lo then), U+A9BD
// (Mc then) and U+111C9 (Po then) are Mn now.
bool is_mn_unicode_8(char32_t c) {
  if (c < 0x300) return false;
  switch (c) {
    case 0x1734: return true;
    case 0x1885: case 0x1886: case 0xA9BD: case 0x111C9: return false;
    default: return (category_mask(c) & U_GC_MN_MASK) && in_unicode_8(c);
  }
}

// Case pairs that Rust's char::to_lowercase knows and ICU 72 (Unicode 15) does not.
char32_t newer_lowercase(char32_t c) {
  if (c >= 0x10D50 && c <= 0x10D65) return c + 0x20;  // Garay
  if (c >= 0x16EA0 && c <= 0x16EB8) return c + 0x1B;  // Beria Erfe
  switch (c) {
    case 0x1C89: return 0x1C8A;
    case 0xA7CB: return 0x0264;
    case 0xA7CC: return 0xA7CD;
    case 0xA7CE: return 0xA7CF;
    case 0xA7D2: return 0xA7D3;
    case 0xA7D4: return 0xA7D5;
    case 0xA7DA: return 0xA7DB;
    case 0xA7DC: return 0x019B;
    default: return c;
  }
}

// char::to_lowercase: ICU's simple mapping plus the one unconditional multi-character
// mapping of SpecialCasing.txt (İ -> i + COMBINING DOT ABOVE).
void append_lowercase(char32_t c, std::u32string& out) {
  if (c < 0x80) {
    out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
  } else if (c == 0x130) {
    out.push_back(U'i');
    out.push_back(0x307);
  } else {
    auto l = static_cast<char32_t>(u_tolower(static_cast<UChar32>(c)));
    out.push_back(l == c ? newer_lowercase(c) : l);
  }
}

// NFD restricted to characters of Unicode <= 9.0; the others pass through untouched and,
// like the starters they are in the crate's tables, stop canonical reordering.
const icu::Normalizer2& nfd_unicode_9() {
  static const icu::FilteredNormalizer2* n = [] {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfd = icu::Normalizer2::getNFDInstance(status);
    auto* set = new icu::UnicodeSet(icu::UnicodeString(u"[:age=9.0:]"), status);
    if (U_FAILURE(status) || nfd == nullptr)
      throw std::runtime_error(std::string("ICU NFD unavailable: ") + u_errorName(status));
    set->freeze();
    return new icu::FilteredNormalizer2(*nfd, *set);  // both live as long as the process
  }();
  return *n;
}

void nfd_strip_marks(std::u32string& s, std::u32string& tmp) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString u = icu::UnicodeString::fromUTF32(
      reinterpret_cast<const UChar32*>(s.data()), static_cast<int32_t>(s.size()));
  const icu::UnicodeString d = nfd_unicode_9().normalize(u, status);
  if (U_FAILURE(status)) throw std::runtime_error(std::string("ICU NFD failed: ") + u_errorName(status));
  tmp.clear();
  for (int32_t i = 0; i < d.length(); i = d.moveIndex32(i, 1)) {
    const auto c = static_cast<char32_t>(d.char32At(i));
    if (!is_mn_unicode_8(c)) tmp.push_back(c);
  }
  s.swap(tmp);
}

// ASCII classes, with and without clean_text.
enum AsciiClass : uint8_t { kWord, kDrop, kSpace, kPunct };

std::array<uint8_t, 128> ascii_classes(bool clean) {
  std::array<uint8_t, 128> t{};
  for (int c = 0; c < 128; ++c) {
    const bool space = c == ' ' || (c >= 0x09 && c <= 0x0D);
    const bool control = c < 0x20 || c == 0x7F;
    if (clean && control && c != '\t' && c != '\n' && c != '\r') t[c] = kDrop;
    else if (space) t[c] = kSpace;
    else if (bert_is_punctuation(char32_t(c))) t[c] = kPunct;
    else t[c] = kWord;
  }
  return t;
}

void finish_word(std::string& buf, std::vector<BertWord>& words, uint32_t& begin,
                 uint32_t& chars) {
  const auto end = static_cast<uint32_t>(buf.size());
  if (end > begin) words.push_back({begin, end - begin, chars});
  begin = end;
  chars = 0;
}

void pretokenize_ascii(std::string_view text, const BertNormalizerOptions& o, std::string& buf,
                       std::vector<BertWord>& words) {
  static const auto clean_table = ascii_classes(true), raw_table = ascii_classes(false);
  const auto& table = o.clean_text ? clean_table : raw_table;
  uint32_t begin = 0, chars = 0;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (table[c]) {
      case kWord:
        buf.push_back(o.lowercase && c >= 'A' && c <= 'Z' ? char(c + 32) : ch);
        ++chars;
        break;
      case kDrop:
        break;
      case kSpace:
        finish_word(buf, words, begin, chars);
        break;
      default:  // punctuation: a word of its own
        finish_word(buf, words, begin, chars);
        buf.push_back(ch);
        chars = 1;
        finish_word(buf, words, begin, chars);
    }
  }
  finish_word(buf, words, begin, chars);
}

// The normalizer's steps on code points, in tokenizers' order.
void normalize_code_points(std::string_view text, const BertNormalizerOptions& o,
                           std::u32string& s, std::u32string& tmp) {
  s.clear();
  s.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    char32_t c = utf8::next(text, i);
    if (o.clean_text) {
      if (c == 0 || c == 0xFFFD || bert_is_control(c)) continue;
      if (bert_is_whitespace(c)) c = U' ';
    }
    if (o.handle_chinese_chars && bert_is_chinese_char(c)) {
      s.push_back(U' ');
      s.push_back(c);
      s.push_back(U' ');
    } else {
      s.push_back(c);
    }
  }
  if (o.strip_accents) nfd_strip_marks(s, tmp);
  if (o.lowercase) {
    tmp.clear();
    for (char32_t c : s) append_lowercase(c, tmp);
    s.swap(tmp);
  }
}

struct BertScratch {
  std::u32string s, tmp;
};
BertScratch& bert_scratch() {
  thread_local BertScratch s;
  return s;
}

}  // namespace

bool bert_is_control(char32_t c) {
  if (c == U'\t' || c == U'\n' || c == U'\r') return false;
  if (c < 0x80) return c < 0x20 || c == 0x7F;
  return (category_mask(c) & (U_GC_CC_MASK | U_GC_CF_MASK | U_GC_CO_MASK)) && in_unicode_8(c);
}

bool bert_is_whitespace(char32_t c) {
  if (c < 0x80) return c == U' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool bert_is_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  if (c == 0x166D || c == 0x111C9) return true;  // Po in Unicode 8.0 (So and Mn now)
  return (category_mask(c) & U_GC_P_MASK) && in_unicode_8(c);
}

bool bert_is_chinese_char(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

void bert_pretokenize(std::string_view text, const BertNormalizerOptions& options,
                      std::string& buf, std::vector<BertWord>& words) {
  buf.clear();
  words.clear();
  if (utf8::is_ascii(text)) {
    pretokenize_ascii(text, options, buf, words);
    return;
  }
  BertScratch& sc = bert_scratch();
  normalize_code_points(text, options, sc.s, sc.tmp);
  uint32_t begin = 0, chars = 0;
  for (char32_t c : sc.s) {
    if (bert_is_whitespace(c)) {
      finish_word(buf, words, begin, chars);
    } else if (bert_is_punctuation(c)) {
      finish_word(buf, words, begin, chars);
      utf8::append(buf, c);
      chars = 1;
      finish_word(buf, words, begin, chars);
    } else {
      utf8::append(buf, c);
      ++chars;
    }
  }
  finish_word(buf, words, begin, chars);
}

std::string bert_normalize(std::string_view text, const BertNormalizerOptions& options) {
  std::u32string s, tmp;
  normalize_code_points(text, options, s, tmp);
  return utf8::encode(s);
}

}  // namespace tessera::text
