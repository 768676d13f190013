// The vocabulary of a WordPiece model: vocab.txt read as HF tokenizers' WordPiece::read_file
// does, and an open-addressing hash table from token bytes to id for the greedy matcher.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::text {

/// Token -> id over one arena of bytes; lookups take a string_view and allocate nothing.
/// Inserting a token again replaces its id (the last line of a vocab.txt wins, as in
/// tokenizers' HashMap).
///
///     WordPieceTable t; t.insert("hello", 7); t.find("hello");  // 7; t.find("x") == -1
class WordPieceTable {
 public:
  void insert(std::string_view token, int32_t id);
  int32_t find(std::string_view token) const {
    if (token.size() > max_len_ || slots_.empty()) return -1;
    const uint64_t h = hash(token);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.hash == h && s.len == token.size() &&
          std::string_view(keys_.data() + s.offset, s.len) == token)
        return s.id;
    }
  }
  size_t max_len() const { return max_len_; }  ///< bytes of the longest token
  size_t size() const { return count_; }

  static uint64_t hash(std::string_view s);

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, len = 0;
    int32_t id = -1;
  };
  void grow();
  std::vector<Slot> slots_;
  std::string keys_;
  uint64_t mask_ = 0;
  size_t count_ = 0, max_len_ = 0;
};

/// The lines of a vocab.txt as tokenizers reads them: split at '\n', then each line's
/// trailing whitespace ("\r", spaces, Unicode White_Space) trimmed; a final newline does not
/// start a line. Throws std::invalid_argument naming `path` when it cannot be read, holds no
/// line, or a line is not UTF-8. A path ending in ".json" is a tokenizer.json: its WordPiece
/// model.vocab, by id (ids 0..n-1, each once), as transformers 5 saves a BERT folder.
std::vector<std::string> read_wordpiece_vocab(const std::string& path);

}  // namespace tessera::text
