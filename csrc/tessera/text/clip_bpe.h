// The byte-level BPE model of open_clip's SimpleTokenizer (tokenizer.py: bytes_to_unicode,
// the vocabulary built from the merges file, and `bpe`), working on raw bytes.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/text/bpe_word_cache.h"

namespace tessera::text {

/// CLIP's vocabulary and merge table. Ids follow open_clip's order: the 256 byte symbols in
/// `bytes_to_unicode` order, the same with the end-of-word mark `</w>`, one id per merge in
/// file order, then <start_of_text> and <end_of_text>.
///
/// Symbols are kept as ids of raw bytes rather than as the printable stand-in characters
/// Python uses, so a word goes from UTF-8 to ids with no string building; the two views are
/// in one-to-one correspondence, so the merges and ids are the same.
///
///     ClipBpe bpe(merges_text);       // the decompressed file's contents
///     std::vector<int32_t> ids;
///     bpe.encode_word("cat", ids);    // {2368}: "cat</w>"
class ClipBpe {
 public:
  /// Parses the merges text; `source` names it in errors. Throws c10::Error when it is
  /// malformed (too few lines, a line that is not two symbols, a symbol outside the byte
  /// alphabet).
  ClipBpe(std::string_view merges_text, const std::string& source);
  ~ClipBpe();

  /// Appends the ids of one pre-token (its UTF-8 bytes). The special-token spellings map to
  /// their ids, as open_clip's pre-seeded cache does. Results are cached, thread-safely.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  /// The bytes a token stands for, `</w>` included (what decode concatenates).
  const std::string& token_bytes(int64_t id) const { return id_bytes_[static_cast<size_t>(id)]; }

  int64_t vocab_size() const { return static_cast<int64_t>(id_bytes_.size()); }
  int32_t sot_id() const { return sot_; }
  int32_t eot_id() const { return eot_; }

  /// Words cached so far (for tests and diagnostics).
  size_t cache_size() const;

 private:
  // Open-addressing table from an adjacent symbol pair to (rank, id of the merged symbol).
  struct PairSlot {
    uint64_t key;
    int32_t rank;
    int32_t merged;
  };
  const PairSlot* find_pair(int32_t a, int32_t b) const;
  void add_pair(int32_t a, int32_t b, int32_t rank, int32_t merged);
  void bpe(std::string_view word, std::vector<int32_t>& symbols) const;
  /// The same merges for a long word in O(n log n): a heap of adjacent pairs by (rank, position)
  /// over a linked list. The scan above is O(n^2), and one 10^6-letter word took ~50 s.
  void bpe_long(std::vector<int32_t>& symbols) const;

  std::array<int32_t, 256> byte_id_{};  // raw byte -> its symbol id (without </w>)
  std::vector<std::string> id_bytes_;   // id -> bytes, for decode
  std::vector<PairSlot> pairs_;
  uint64_t pair_mask_ = 0;
  int32_t sot_ = -1, eot_ = -1;
  mutable BpeWordCache cache_;
};

}  // namespace tessera::text
