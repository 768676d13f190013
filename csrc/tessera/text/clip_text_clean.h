// Caption cleaning of open_clip's tokenizer.py (basic_clean + whitespace_clean + lower, the
// 'lower' cleaner of SimpleTokenizer), with the ordinary-text part of ftfy 6.3's fix_text.
#pragma once
#include <string>
#include <string_view>

namespace tessera::text {

/// Cleans one caption exactly as open_clip does before pre-tokenizing, for ordinary text:
///
///  1. ftfy.fix_text, per line: HTML entities (skipped from the first line containing '<'
///     on, as ftfy's "auto" mode does), C1 controls read as Windows-1252, Latin ligatures
///     (ﬁ -> fi), halfwidth/fullwidth forms (ＡＢＣ -> ABC, U+3000 -> space), curly quotes
///     -> straight, line breaks -> '\n', ANSI terminal escapes and stray control characters
///     removed, NFC -- repeated until nothing changes, as ftfy does.
///     Not reproduced: ftfy's mojibake repair (re-decoding text such as "cafÃ©" that was
///     UTF-8 read as Latin-1). It fires only on text that already looks broken, and
///     guessing it needs ftfy's whole heuristic tables.
///  2. html.unescape twice (see html_unescape.h for the entity set).
///  3. Python's str.split()/" ".join whitespace collapse and strip.
///  4. Python's str.lower(): full Unicode lower-casing (ICU root locale; İ -> i̇, final σ/ς).
///
/// Input is UTF-8; ill-formed bytes become U+FFFD first (a Python str cannot hold them).
///
///     clip_clean_text("  Hello&nbsp;WORLD ﬁne  ")  // "hello world fine"
std::string clip_clean_text(std::string_view utf8);

/// True when `clip_clean_text(s)` is just whitespace collapse plus ASCII lower-casing: every
/// byte is printable ASCII or one of \t \n \f \r, and there is no '&'. The tokenizer uses
/// this to skip the Unicode machinery for the common case.
bool clip_text_is_plain_ascii(std::string_view s);

}  // namespace tessera::text
