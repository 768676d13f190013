// HTML character references as CPython's html.unescape (3.11) and ftfy 6's unescape_html
// decode them; used by the CLIP text cleaner to match open_clip's basic_clean.
#pragma once
#include <string>
#include <string_view>

namespace tessera::text {

/// Python's `html.unescape`: numeric references `&#65;` / `&#x41;` (with or without `;`,
/// including the HTML5 remapping of 0x80-0x9F to Windows-1252, U+FFFD for 0, surrogates and
/// out-of-range values, and dropping of noncharacters), and named references.
///
/// Named references: the 252 HTML 4 entities (Latin-1, symbols and Greek, special) plus
/// `&apos;` and `&TRADE;`, with `;`; the 106 legacy names that HTML5 also accepts without
/// `;` (`&amp`, `&copy2024` -> "©2024", ...), matched longest-prefix as Python does; and the 39
/// HTML5 names that begin with a legacy name (`&centerdot;`), which that prefix would otherwise
/// split. The other ~1800 HTML5-only names (`&check;`, `&NotEqualTilde;`, ...) are left as
/// written: they are vanishingly rare in captions, and a full table would dwarf the
/// tokenizer.
///
///     html_unescape(U"Tom &amp; Jerry &#8211; &eacute;")  // U"Tom & Jerry – é"
std::u32string html_unescape(std::u32string_view s);

/// ftfy's `unescape_html`: only the unambiguous `&name;` / `&#num;` forms (1-24 ASCII
/// alphanumerics, `;` required), plus all-caps spellings of lower-case entities
/// (`&EACUTE;` -> "É"), over the same entity subset as `html_unescape`.
std::u32string ftfy_unescape_html(std::u32string_view s);

/// The Windows-1252 reading of a C1 control (0x80-0x9F); the five bytes Windows-1252 leaves
/// undefined map to themselves ("sloppy" decoding, as ftfy and the HTML5 spec do).
char32_t cp1252_c1(char32_t c);

}  // namespace tessera::text
