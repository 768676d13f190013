// CLIP pre-tokenization after open_clip's tokenizer.py (SimpleTokenizer.pat with re.findall).
#include "tessera/text/clip_pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstring>
#include <stdexcept>
#include <string>

#include "tessera/text/utf8.h"

namespace tessera::text {
namespace {

// open_clip's pattern with the last class adjusted to reproduce what the `regex` module does
// with it, where PCRE2 would differ:
//  - it excludes U+0020 rather than \s: after cleaning, a space is the only whitespace left
//    by Python's definition, but PCRE2's UCP \s also takes U+180E (MONGOLIAN VOWEL
//    SEPARATOR), which Python keeps and open_clip tokenizes as punctuation;
//  - it excludes U+0345 (COMBINING GREEK YPOGEGRAMMENI): under IGNORECASE `regex` treats it
//    as its case-fold partner ι, a letter, so the negated class rejects it, yet [\p{L}]
//    does not take it either -- open_clip silently drops it. It is the only assigned code
//    point (Unicode 14) where the two engines disagree.
// Not reproduced: code points unassigned in Unicode 14 (PCRE2 10.42's and Python 3.11's
// tables) that newer `regex` releases know as letters or digits; PCRE2 sees punctuation.
constexpr const char* kPattern =
    "<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|"
    "[^ \\p{L}\\p{N}\\x{345}]+";

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

// Match state is not shareable across threads; one pair of offsets suffices (no groups).
pcre2_match_data* thread_match_data() {
  thread_local std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create(1, nullptr));
  return md.get();
}

inline bool ascii_letter(char c) { return c >= 'a' && c <= 'z'; }
inline bool ascii_digit(char c) { return c >= '0' && c <= '9'; }

bool starts_with(std::string_view s, size_t i, std::string_view prefix) {
  return s.size() - i >= prefix.size() && s.compare(i, prefix.size(), prefix) == 0;
}

}  // namespace

struct ClipPretokenizer::Pattern {
  pcre2_code* code = nullptr;
  ~Pattern() { pcre2_code_free(code); }
};

ClipPretokenizer::ClipPretokenizer() : pattern_(std::make_unique<Pattern>()) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pattern_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &err, &offset, nullptr);
  if (pattern_->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    throw std::runtime_error("ClipPretokenizer: PCRE2 rejected the pattern at offset " +
                             std::to_string(offset) + ": " + reinterpret_cast<char*>(msg));
  }
  // JIT is several times faster; without it (e.g. a PCRE2 built without JIT) pcre2_match
  // quietly interprets, so a failure here is not an error.
  pcre2_jit_compile(pattern_->code, PCRE2_JIT_COMPLETE);
}

ClipPretokenizer::~ClipPretokenizer() = default;

void ClipPretokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  if (utf8::is_ascii(text)) split_ascii(text, out);
  else split_regex(text, out);
}

void ClipPretokenizer::split_regex(std::string_view text,
                                   std::vector<std::string_view>& out) const {
  // Validate once so every match can skip PCRE2's own (per call, whole-subject) check.
  if (!utf8::valid(text))
    throw std::invalid_argument("ClipPretokenizer: input is not valid UTF-8");
  pcre2_match_data* md = thread_match_data();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE pos = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(pattern_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                               md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      throw std::runtime_error(std::string("ClipPretokenizer: PCRE2 match failed: ") +
                               reinterpret_cast<char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    out.emplace_back(text.data() + ov[0], ov[1] - ov[0]);
    pos = ov[1];  // the pattern cannot match empty, so this always advances
  }
}

void ClipPretokenizer::split_ascii(std::string_view s, std::vector<std::string_view>& out) {
  // The same alternation, tried in the same order at each start position. Only the start
  // of a piece chooses the alternative: a punctuation run, once begun, swallows "'" and '<'.
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const char c = s[i];
    const size_t start = i;
    if (c == ' ') {
      ++i;
      continue;
    }
    if (c == '<' && starts_with(s, i, "<start_of_text>")) {
      i += 15;
    } else if (c == '<' && starts_with(s, i, "<end_of_text>")) {
      i += 13;
    } else if (c == '\'' && i + 1 < n &&
               (s[i + 1] == 's' || s[i + 1] == 't' || s[i + 1] == 'm' || s[i + 1] == 'd')) {
      i += 2;
    } else if (c == '\'' && i + 2 < n &&
               ((s[i + 1] == 'r' && s[i + 2] == 'e') || (s[i + 1] == 'v' && s[i + 2] == 'e') ||
                (s[i + 1] == 'l' && s[i + 2] == 'l'))) {
      i += 3;
    } else if (ascii_letter(c)) {
      while (i < n && ascii_letter(s[i])) ++i;
    } else if (ascii_digit(c)) {
      ++i;
    } else {
      while (i < n && s[i] != ' ' && !ascii_letter(s[i]) && !ascii_digit(s[i])) ++i;
    }
    out.emplace_back(s.data() + start, i - start);
  }
}

}  // namespace tessera::text
