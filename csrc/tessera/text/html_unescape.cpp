// HTML character-reference decoding after CPython's Lib/html/__init__.py (unescape) and
// ftfy 6's fixes.unescape_html; the entity subset is documented in html_unescape.h.
#include "tessera/text/html_unescape.h"

#include <unicode/locid.h>
#include <unicode/unistr.h>

#include <unordered_map>
#include <unordered_set>

namespace tessera::text {
namespace {

// Names of U+00A0..U+00FF in code point order: these are also the legacy names that may
// appear without the terminating ';'.
constexpr const char* kLatin1Names[96] = {
    "nbsp",   "iexcl",  "cent",   "pound",  "curren", "yen",    "brvbar", "sect",
    "uml",    "copy",   "ordf",   "laquo",  "not",    "shy",    "reg",    "macr",
    "deg",    "plusmn", "sup2",   "sup3",   "acute",  "micro",  "para",   "middot",
    "cedil",  "sup1",   "ordm",   "raquo",  "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc",  "Atilde", "Auml",   "Aring",  "AElig",  "Ccedil",
    "Egrave", "Eacute", "Ecirc",  "Euml",   "Igrave", "Iacute", "Icirc",  "Iuml",
    "ETH",    "Ntilde", "Ograve", "Oacute", "Ocirc",  "Otilde", "Ouml",   "times",
    "Oslash", "Ugrave", "Uacute", "Ucirc",  "Uuml",   "Yacute", "THORN",  "szlig",
    "agrave", "aacute", "acirc",  "atilde", "auml",   "aring",  "aelig",  "ccedil",
    "egrave", "eacute", "ecirc",  "euml",   "igrave", "iacute", "icirc",  "iuml",
    "eth",    "ntilde", "ograve", "oacute", "ocirc",  "otilde", "ouml",   "divide",
    "oslash", "ugrave", "uacute", "ucirc",  "uuml",   "yacute", "thorn",  "yuml"};

struct Entity {
  const char* name;
  char32_t cp;
};
// The rest of HTML 4 (values as HTML5 defines them: lang/rang moved to U+27E8/9) and &apos;.
constexpr Entity kOtherEntities[] = {
    {"quot", 0x22}, {"amp", 0x26}, {"apos", 0x27}, {"lt", 0x3C}, {"gt", 0x3E},
    {"OElig", 0x152}, {"oelig", 0x153}, {"Scaron", 0x160}, {"scaron", 0x161},
    {"Yuml", 0x178}, {"fnof", 0x192}, {"circ", 0x2C6}, {"tilde", 0x2DC},
    {"Alpha", 0x391}, {"Beta", 0x392}, {"Gamma", 0x393}, {"Delta", 0x394},
    {"Epsilon", 0x395}, {"Zeta", 0x396}, {"Eta", 0x397}, {"Theta", 0x398}, {"Iota", 0x399},
    {"Kappa", 0x39A}, {"Lambda", 0x39B}, {"Mu", 0x39C}, {"Nu", 0x39D}, {"Xi", 0x39E},
    {"Omicron", 0x39F}, {"Pi", 0x3A0}, {"Rho", 0x3A1}, {"Sigma", 0x3A3}, {"Tau", 0x3A4},
    {"Upsilon", 0x3A5}, {"Phi", 0x3A6}, {"Chi", 0x3A7}, {"Psi", 0x3A8}, {"Omega", 0x3A9},
    {"alpha", 0x3B1}, {"beta", 0x3B2}, {"gamma", 0x3B3}, {"delta", 0x3B4},
    {"epsilon", 0x3B5}, {"zeta", 0x3B6}, {"eta", 0x3B7}, {"theta", 0x3B8}, {"iota", 0x3B9},
    {"kappa", 0x3BA}, {"lambda", 0x3BB}, {"mu", 0x3BC}, {"nu", 0x3BD}, {"xi", 0x3BE},
    {"omicron", 0x3BF}, {"pi", 0x3C0}, {"rho", 0x3C1}, {"sigmaf", 0x3C2}, {"sigma", 0x3C3},
    {"tau", 0x3C4}, {"upsilon", 0x3C5}, {"phi", 0x3C6}, {"chi", 0x3C7}, {"psi", 0x3C8},
    {"omega", 0x3C9}, {"thetasym", 0x3D1}, {"upsih", 0x3D2}, {"piv", 0x3D6},
    {"ensp", 0x2002}, {"emsp", 0x2003}, {"thinsp", 0x2009}, {"zwnj", 0x200C},
    {"zwj", 0x200D}, {"lrm", 0x200E}, {"rlm", 0x200F}, {"ndash", 0x2013}, {"mdash", 0x2014},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"sbquo", 0x201A}, {"ldquo", 0x201C},
    {"rdquo", 0x201D}, {"bdquo", 0x201E}, {"dagger", 0x2020}, {"Dagger", 0x2021},
    {"bull", 0x2022}, {"hellip", 0x2026}, {"permil", 0x2030}, {"prime", 0x2032},
    {"Prime", 0x2033}, {"lsaquo", 0x2039}, {"rsaquo", 0x203A}, {"oline", 0x203E},
    {"frasl", 0x2044}, {"euro", 0x20AC}, {"image", 0x2111}, {"weierp", 0x2118},
    {"real", 0x211C}, {"trade", 0x2122}, {"alefsym", 0x2135}, {"larr", 0x2190},
    {"uarr", 0x2191}, {"rarr", 0x2192}, {"darr", 0x2193}, {"harr", 0x2194},
    {"crarr", 0x21B5}, {"lArr", 0x21D0}, {"uArr", 0x21D1}, {"rArr", 0x21D2},
    {"dArr", 0x21D3}, {"hArr", 0x21D4}, {"forall", 0x2200}, {"part", 0x2202},
    {"exist", 0x2203}, {"empty", 0x2205}, {"nabla", 0x2207}, {"isin", 0x2208},
    {"notin", 0x2209}, {"ni", 0x220B}, {"prod", 0x220F}, {"sum", 0x2211}, {"minus", 0x2212},
    {"lowast", 0x2217}, {"radic", 0x221A}, {"prop", 0x221D}, {"infin", 0x221E},
    {"ang", 0x2220}, {"and", 0x2227}, {"or", 0x2228}, {"cap", 0x2229}, {"cup", 0x222A},
    {"int", 0x222B}, {"there4", 0x2234}, {"sim", 0x223C}, {"cong", 0x2245},
    {"asymp", 0x2248}, {"ne", 0x2260}, {"equiv", 0x2261}, {"le", 0x2264}, {"ge", 0x2265},
    {"sub", 0x2282}, {"sup", 0x2283}, {"nsub", 0x2284}, {"sube", 0x2286}, {"supe", 0x2287},
    {"oplus", 0x2295}, {"otimes", 0x2297}, {"perp", 0x22A5}, {"sdot", 0x22C5},
    {"lceil", 0x2308}, {"rceil", 0x2309}, {"lfloor", 0x230A}, {"rfloor", 0x230B},
    {"loz", 0x25CA}, {"spades", 0x2660}, {"clubs", 0x2663}, {"hearts", 0x2665},
    {"diams", 0x2666}, {"lang", 0x27E8}, {"rang", 0x27E9},
    // HTML5's capitalised aliases of HTML 4 names (the first six also without ';').
    {"AMP", 0x26}, {"COPY", 0xA9}, {"GT", 0x3E}, {"LT", 0x3C}, {"QUOT", 0x22}, {"REG", 0xAE},
    {"TRADE", 0x2122}};

// The HTML5-only names that begin with a legacy name (`&centerdot;`, `&copysr;`, `&gtdot;`): left
// out of the table, they decoded by that prefix and kept the rest ("¢erdot;"), which is neither
// what Python gives nor the text as written. Two of them are two code points.
struct Entity2 {
  const char* name;
  char32_t cp, combining;
};
constexpr Entity2 kLegacyPrefixed[] = {
    {"centerdot", 0xB7, 0}, {"copysr", 0x2117, 0}, {"divideontimes", 0x22C7, 0}, {"gtcc", 0x2AA7, 0},
    {"gtcir", 0x2A7A, 0}, {"gtdot", 0x22D7, 0}, {"gtlPar", 0x2995, 0}, {"gtquest", 0x2A7C, 0},
    {"gtrapprox", 0x2A86, 0}, {"gtrarr", 0x2978, 0}, {"gtrdot", 0x22D7, 0}, {"gtreqless", 0x22DB, 0},
    {"gtreqqless", 0x2A8C, 0}, {"gtrless", 0x2277, 0}, {"gtrsim", 0x2273, 0}, {"ltcc", 0x2AA6, 0},
    {"ltcir", 0x2A79, 0}, {"ltdot", 0x22D6, 0}, {"lthree", 0x22CB, 0}, {"ltimes", 0x22C9, 0},
    {"ltlarr", 0x2976, 0}, {"ltquest", 0x2A7B, 0}, {"ltri", 0x25C3, 0}, {"ltrie", 0x22B4, 0},
    {"ltrif", 0x25C2, 0}, {"ltrPar", 0x2996, 0}, {"notindot", 0x22F5, 0x338}, {"notinE", 0x22F9, 0x338},
    {"notinva", 0x2209, 0}, {"notinvb", 0x22F7, 0}, {"notinvc", 0x22F6, 0}, {"notni", 0x220C, 0},
    {"notniva", 0x220C, 0}, {"notnivb", 0x22FE, 0}, {"notnivc", 0x22FD, 0}, {"parallel", 0x2225, 0},
    {"timesb", 0x22A0, 0}, {"timesbar", 0x2A31, 0}, {"timesd", 0x2A30, 0}};

constexpr char32_t kCp1252[32] = {
    0x20AC, 0x81,   0x201A, 0x192,  0x201E, 0x2026, 0x2020, 0x2021, 0x2C6,  0x2030, 0x160,
    0x2039, 0x152,  0x8D,   0x17D,  0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x2DC,  0x2122, 0x161,  0x203A, 0x153,  0x9D,   0x17E,  0x178};

struct Tables {
  std::unordered_map<std::string, std::u32string> named;  // accepted with ';'
  std::unordered_map<std::string, char32_t> legacy;  // also accepted without ';'
  std::unordered_map<std::string, std::u32string> ftfy_caps;  // "EACUTE" -> "É"
};

std::u32string upper_of(const std::u32string& s) {
  icu::UnicodeString u = icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                                       static_cast<int32_t>(s.size()));
  u.toUpper(icu::Locale::getRoot());
  std::u32string out(static_cast<size_t>(u.countChar32()), U'\0');
  UErrorCode status = U_ZERO_ERROR;
  u.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  return out;
}

const Tables& tables();

// Turns a run of code points into the ASCII key used by the tables; anything non-ASCII
// becomes a byte no entity name contains, so it can only fail to match.
std::string ascii_key(std::u32string_view s) {
  std::string key(s.size(), '\x01');
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] < 0x80) key[i] = static_cast<char>(s[i]);
  return key;
}

bool is_digit(char32_t c) { return c >= U'0' && c <= U'9'; }
bool is_hex(char32_t c) {
  return is_digit(c) || (c >= U'a' && c <= U'f') || (c >= U'A' && c <= U'F');
}
int hex_value(char32_t c) {
  return is_digit(c) ? int(c - U'0') : int((c | 0x20) - U'a') + 10;
}

// What Python's _replace_charref returns for code point `num`.
void append_numeric(std::u32string& out, char32_t num) {
  if (num == 0) return out.push_back(0xFFFD);
  if (num == 0x0D) return out.push_back(0x0D);
  if (num >= 0x80 && num <= 0x9F) return out.push_back(kCp1252[num - 0x80]);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return out.push_back(0xFFFD);
  const bool invalid = (num >= 0x1 && num <= 0x8) || (num >= 0xE && num <= 0x1F) ||
                       num == 0x7F || num == 0xB || (num >= 0xFDD0 && num <= 0xFDEF) ||
                       (num & 0xFFFE) == 0xFFFE;
  if (!invalid) out.push_back(num);
}

const Tables& tables() {
  static const Tables t = [] {
    Tables t;
    for (int i = 0; i < 96; ++i) {
      t.named.emplace(kLatin1Names[i], std::u32string(1, char32_t(0xA0 + i)));
      t.legacy.emplace(kLatin1Names[i], char32_t(0xA0 + i));
    }
    for (const Entity& e : kOtherEntities) t.named.emplace(e.name, std::u32string(1, e.cp));
    for (const Entity2& e : kLegacyPrefixed)
      t.named.emplace(e.name, e.combining ? std::u32string{e.cp, e.combining} : std::u32string(1, e.cp));
    for (const char* n : {"amp", "lt", "gt", "quot", "AMP", "COPY", "GT", "LT", "QUOT", "REG"})
      t.legacy.emplace(n, t.named.at(n)[0]);
    return t;
  }();
  return t;
}

const std::unordered_map<std::string, std::u32string>& ftfy_caps() {
  // ftfy adds "&NAME;" for every all-lower-case entity whose capitalised spelling Python
  // would not already decode some other way; it decodes to the upper-cased character.
  static const std::unordered_map<std::string, std::u32string> caps = [] {
    std::unordered_map<std::string, std::u32string> caps;
    for (const auto& [name, cp] : tables().named) {
      std::string up = name;
      bool lower = true;
      for (char& c : up) {
        if (c >= 'A' && c <= 'Z') lower = false;
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      }
      if (!lower) continue;
      std::u32string probe = U"&";
      for (char c : up) probe.push_back(static_cast<char32_t>(c));
      probe.push_back(U';');
      if (html_unescape(probe) == probe) caps.emplace(up, upper_of(cp));
    }
    return caps;
  }();
  return caps;
}

}  // namespace

char32_t cp1252_c1(char32_t c) { return (c >= 0x80 && c <= 0x9F) ? kCp1252[c - 0x80] : c; }

std::u32string html_unescape(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  const Tables& t = tables();
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < n && s[j] == U'#') {
      // '#[0-9]+;?' is tried before '#[xX][0-9a-fA-F]+;?'.
      size_t k = j + 1;
      int base = 0;
      if (k < n && is_digit(s[k])) base = 10;
      else if (k + 1 < n && (s[k] == U'x' || s[k] == U'X') && is_hex(s[k + 1])) base = 16, ++k;
      if (base == 0) {
        out.push_back(s[i++]);
        continue;
      }
      char32_t num = 0;  // saturates: anything past U+10FFFF decodes the same way
      while (k < n && (base == 10 ? is_digit(s[k]) : is_hex(s[k]))) {
        num = std::min<char32_t>(num * base + hex_value(s[k]), 0x110000);
        ++k;
      }
      if (k < n && s[k] == U';') ++k;
      append_numeric(out, num);
      i = k;
      continue;
    }
    // Named: up to 32 characters outside "\t\n\f <&#;", then an optional ';'.
    size_t k = j;
    while (k < n && k - j < 32) {
      const char32_t c = s[k];
      if (c == U'\t' || c == U'\n' || c == U'\f' || c == U' ' || c == U'<' || c == U'&' ||
          c == U'#' || c == U';')
        break;
      ++k;
    }
    if (k == j) {
      out.push_back(s[i++]);
      continue;
    }
    const bool semi = k < n && s[k] == U';';
    const std::string name = ascii_key(s.substr(j, k - j));
    const size_t end = semi ? k + 1 : k;
    if (semi ? t.named.count(name) : t.legacy.count(name)) {
      if (semi) out.append(t.named.at(name));
      else out.push_back(t.legacy.at(name));
      i = end;
      continue;
    }
    // Longest legacy prefix of at least two characters; the rest is kept as written.
    const size_t len = end - j;  // Python's len(s), the ';' included
    bool found = false;
    for (size_t x = len - 1; x >= 2 && !found; --x) {
      if (x > name.size()) continue;
      auto it = t.legacy.find(name.substr(0, x));
      if (it == t.legacy.end()) continue;
      out.push_back(it->second);
      out.append(s.substr(j + x, end - (j + x)));
      found = true;
    }
    if (!found) out.append(s.substr(i, end - i));
    i = end;
  }
  return out;
}

std::u32string ftfy_unescape_html(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  const Tables& t = tables();
  auto alnum = [](char32_t c) {
    return is_digit(c) || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
  };
  std::u32string out;
  out.reserve(s.size());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] != U'&') {
      out.push_back(s[i++]);
      continue;
    }
    // '&#?[0-9A-Za-z]{1,24};' -- the run must be 1..24 long and end right at a ';'.
    const bool hash = i + 1 < n && s[i + 1] == U'#';
    const size_t j = i + 1 + (hash ? 1 : 0);
    size_t k = j;
    while (k < n && alnum(s[k])) ++k;
    if (k == j || k - j > 24 || k >= n || s[k] != U';') {
      out.push_back(s[i++]);
      continue;
    }
    const std::u32string_view whole = s.substr(i, k + 1 - i);
    const std::string name = ascii_key(s.substr(j, k - j));
    if (!hash && t.named.count(name)) {
      out.append(t.named.at(name));
    } else if (!hash && ftfy_caps().count(name)) {
      out.append(ftfy_caps().at(name));
    } else if (hash) {
      // Keep the reference unless Python decodes all of it (';' consumed).
      std::u32string dec = html_unescape(whole);
      out.append(dec.find(U';') == std::u32string::npos ? std::u32string_view(dec) : whole);
    } else {
      out.append(whole);
    }
    i = k + 1;
  }
  return out;
}

}  // namespace tessera::text
