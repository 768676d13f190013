// BERT's BasicTokenizer (Devlin et al., 2019, google-research/bert tokenization.py) as HF
// tokenizers implements it for BertTokenizerFast: normalizers/bert.rs (BertNormalizer) and
// pre_tokenizers/bert.rs (BertPreTokenizer), character for character.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::text {

/// BertNormalizer's switches. BertTokenizerFast sets clean_text always, the others from
/// do_lower_case, strip_accents (None -> same as do_lower_case) and tokenize_chinese_chars.
struct BertNormalizerOptions {
  bool clean_text = true;            ///< drop NUL, U+FFFD and control/format chars; whitespace -> ' '
  bool handle_chinese_chars = true;  ///< put spaces around CJK ideographs
  bool strip_accents = true;         ///< NFD, then drop non-spacing marks (Mn)
  bool lowercase = true;             ///< per-character full lower-casing (İ -> i + U+0307)
};

/// One pre-token: bytes [begin, begin + size) of the output buffer, `chars` code points long.
struct BertWord {
  uint32_t begin = 0, size = 0, chars = 0;
};

/// Normalizes `text` and splits it as BertPreTokenizer does: whitespace separates words and
/// is dropped, every punctuation character is a word of its own. Fills `buf` with the words'
/// UTF-8 bytes and `words` with their spans (both cleared first). Ill-formed UTF-8 reads as
/// U+FFFD, which cleaning drops. Plain ASCII takes a fast path with no ICU calls.
///
///     std::string buf; std::vector<BertWord> w;
///     bert_pretokenize("Héllo, WORLD!", {}, buf, w);  // "hello" "," "world" "!"
///
/// Character classes follow tokenizers exactly, including the Unicode versions of its tables
/// (categories of Unicode 8.0, NFD of Unicode 9.0, lower-casing of the newest Unicode); see
/// bert_pretokenize.cpp.
void bert_pretokenize(std::string_view text, const BertNormalizerOptions& options,
                      std::string& buf, std::vector<BertWord>& words);

/// The normalized text alone (BertNormalizer.normalize_str), for tests and debugging.
std::string bert_normalize(std::string_view text, const BertNormalizerOptions& options);

/// The character classes, exposed for tests.
bool bert_is_control(char32_t c);      ///< removed by clean_text (besides NUL and U+FFFD)
bool bert_is_whitespace(char32_t c);   ///< Unicode White_Space
bool bert_is_punctuation(char32_t c);  ///< ASCII punctuation or general category P*
bool bert_is_chinese_char(char32_t c); ///< the CJK ideograph blocks BERT pads with spaces

}  // namespace tessera::text
