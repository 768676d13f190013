// The pre-tokenizer regex of open_clip's SimpleTokenizer (tokenizer.py, `self.pat`), run with
// PCRE2 in UTF + UCP mode, plus an equivalent hand-written scanner for ASCII text.
#pragma once
#include <memory>
#include <string_view>
#include <vector>

namespace tessera::text {

/// Splits cleaned (lower-cased, single-spaced) caption text into the pieces CLIP's BPE sees:
///
///     <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
///
/// case-insensitive, leftmost-first, gaps (spaces) dropped -- `re.findall` semantics.
///
///     ClipPretokenizer pre;
///     std::vector<std::string_view> pieces;
///     pre.split("it's 42!", pieces);  // {"it", "'s", "4", "2", "!"}
///
/// Thread-safe: the compiled pattern is shared, match state is per thread.
class ClipPretokenizer {
 public:
  ClipPretokenizer();
  ~ClipPretokenizer();
  ClipPretokenizer(const ClipPretokenizer&) = delete;
  ClipPretokenizer& operator=(const ClipPretokenizer&) = delete;

  /// Appends the pieces of `text` (valid UTF-8, output of clip_clean_text) to `out`, as
  /// views into `text`. ASCII text takes the scanner, anything else PCRE2.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

  /// The PCRE2 path alone (exposed so tests can hold the scanner against it).
  void split_regex(std::string_view text, std::vector<std::string_view>& out) const;

  /// The ASCII scanner alone; `text` must be lower-case ASCII where the only whitespace is
  /// ' '.
  static void split_ascii(std::string_view text, std::vector<std::string_view>& out);

 private:
  struct Pattern;
  std::unique_ptr<Pattern> pattern_;
};

}  // namespace tessera::text
