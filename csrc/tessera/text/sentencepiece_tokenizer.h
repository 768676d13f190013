// SentencePiece tokenization (Kudo & Richardson, 2018) over google/sentencepiece's
// SentencePieceProcessor, as LLaMA's tokenizer.py wraps it (bos/eos flags on encode).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::text {

/// A trained SentencePiece model (`tokenizer.model`), e.g. LLaMA's or llama2.c's.
///
///     tessera::text::SentencePieceTokenizer sp("tokenizer.model");
///     auto ids = sp.encode("Hello world!");  // {1, 15043, 3186, 29991}: bos first
///     sp.decode(ids);                         // "Hello world!"
///
/// Thread-safe: every method is const and the processor is never mutated after loading.
class SentencePieceTokenizer {
 public:
  /// Loads the serialized model. Throws c10::Error naming `model_path` when it is missing or
  /// not a SentencePiece model.
  explicit SentencePieceTokenizer(const std::string& model_path);
  ~SentencePieceTokenizer();
  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;

  /// Ids of `text`, optionally framed by bos/eos (LLaMA's defaults: bos yes, eos no).
  /// A flag is ignored when the model defines no such token (id -1).
  std::vector<int64_t> encode(const std::string& text, bool add_bos = true,
                              bool add_eos = false) const;

  /// Text of `ids`; control tokens (bos, eos, pad) decode to nothing.
  /// Throws c10::IndexError for an id outside [0, vocab_size).
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t bos_id() const;  ///< -1 when the model has none
  int64_t eos_id() const;  ///< -1 when the model has none
  int64_t pad_id() const;  ///< -1 when the model has none (llama2.c's has none)
  int64_t unk_id() const;
  int64_t vocab_size() const;

  /// The piece string of `id` ("▁Hello"); throws c10::IndexError when out of range.
  std::string id_to_piece(int64_t id) const;
  /// The id of `piece`, or `unk_id()` when the vocabulary lacks it.
  int64_t piece_to_id(const std::string& piece) const;

 private:
  struct Impl;  // keeps sentencepiece_processor.h out of this header
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::text
