// CLIP's byte-level BPE tokenizer, after open_clip's tokenizer.py (SimpleTokenizer and
// tokenize), itself from OpenAI's CLIP (Radford et al., 2021).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::text {

/// Byte-level BPE over CLIP's 49,408-token vocabulary, id-for-id identical to open_clip's
/// `SimpleTokenizer` (default 'lower' cleaning) on ordinary text; see clip_text_clean.h for
/// the cleaning and the one part of ftfy it leaves out (mojibake repair).
///
///     tessera::text::ClipTokenizer tok("bpe_simple_vocab_16e6.txt.gz");
///     tok.encode("a photo of a cat");          // {320, 1125, 539, 320, 2368}
///     at::Tensor ids = tok.tokenize({"a dog"});  // int64 [1, 77]: 49406 320 1929 49407 0 ...
///
/// All methods are const and thread-safe; BPE results of words are cached (bounded) and
/// shared between threads.
class ClipTokenizer {
 public:
  /// Reads the merges file open_clip ships (gzip, or the same text uncompressed): a header
  /// line, then one "left right" merge per line, of which the first 48,894 are used.
  /// Throws c10::Error naming `bpe_path` when it is missing, unreadable or malformed.
  explicit ClipTokenizer(const std::string& bpe_path);
  ~ClipTokenizer();
  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;

  /// Token ids of one text, without <start_of_text>/<end_of_text> (open_clip's `encode`).
  std::vector<int64_t> encode(const std::string& text) const;

  /// `encode` of every text, spread over `at::get_num_threads()` threads.
  std::vector<std::vector<int64_t>> encode_batch(const std::vector<std::string>& texts) const;

  /// open_clip's `decode`: each token's bytes, the end-of-word marker as a space, invalid
  /// UTF-8 replaced by U+FFFD. Throws c10::IndexError for an id outside the vocabulary.
  std::string decode(const std::vector<int64_t>& ids) const;

  /// open_clip's `tokenize`: int64 [texts.size(), context_length], each row <start_of_text>,
  /// the ids, <end_of_text>, zero padded; a row too long is cut to `context_length` and its
  /// last id set to <end_of_text>. Runs on `at::get_num_threads()` threads.
  /// Throws c10::ValueError when context_length < 2.
  at::Tensor tokenize(const std::vector<std::string>& texts, int64_t context_length = 77) const;

  int64_t sot_token_id() const;  ///< <start_of_text>, 49406
  int64_t eot_token_id() const;  ///< <end_of_text>, 49407
  int64_t vocab_size() const;    ///< 49408

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::text
