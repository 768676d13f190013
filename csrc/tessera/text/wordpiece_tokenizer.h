// BERT's WordPiece tokenizer (Devlin et al., 2019; Wu et al., 2016) as transformers'
// BertTokenizerFast runs it over HF tokenizers 0.23: special tokens cut out of the raw text,
// BertNormalizer + BertPreTokenizer (bert_pretokenize.h), greedy longest-match-first
// WordPiece (models/wordpiece), "[CLS] $A [SEP]" (TemplateProcessing), WordPiece decoder.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::text {

/// How the text is normalized and which tokens play which part; BertTokenizerFast's
/// constructor arguments of the same names.
struct WordPieceOptions {
  bool do_lower_case = true;
  std::optional<bool> strip_accents;  ///< unset: strip exactly when lower-casing (BERT's rule)
  bool tokenize_chinese_chars = true;
  std::string unk_token = "[UNK]", sep_token = "[SEP]", pad_token = "[PAD]",
              cls_token = "[CLS]", mask_token = "[MASK]";
  int64_t max_input_chars_per_word = 100;  ///< a longer word is one [UNK]
};

/// Per-call encoding settings.
struct WordPieceEncodeOptions {
  bool add_special_tokens = true;  ///< [CLS] first, [SEP] last
  int64_t max_length = -1;         ///< keep at most this many ids, specials included; -1: all
  bool truncate_left = false;      ///< truncation_side="left": drop the first ids instead
};

/// The ids of a batch, ragged: row i is ids[offsets[i], offsets[i + 1]).
struct WordPieceBatch {
  std::vector<int32_t> ids;
  std::vector<int64_t> offsets{0};

  int64_t rows() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t length(int64_t row) const { return offsets[size_t(row + 1)] - offsets[size_t(row)]; }
  int64_t longest() const;
  /// Writes row-major [rows(), width] ids (padded with pad_id, on the left when pad_left)
  /// and the matching 1/0 attention mask; a row longer than width is cut (at its end).
  void pad_into(int64_t width, int64_t pad_id, bool pad_left, int64_t* ids_out,
                int64_t* mask_out) const;
};

/// WordPiece over a BERT `vocab.txt` (one token per line, id = line number) or a
/// `tokenizer.json`'s WordPiece vocabulary, id-for-id equal to transformers' BertTokenizerFast
/// with the same vocabulary and flags.
///
///     tessera::text::WordPieceTokenizer tok("bert-base-uncased/vocab.txt");
///     tok.encode("Hello, world!");          // {101, 7592, 1010, 2088, 999, 102}
///     tok.decode({101, 7592, 1010, 2088, 999, 102}, true);  // "hello, world!"
///     tok.add_special_token("[DEC]");       // 30522, BLIP-2's decoder bos (LAVIS)
///
/// Special tokens ([UNK] [SEP] [PAD] [CLS] [MASK] and added ones) written in the text are
/// matched before normalization and kept whole, as added tokens are in tokenizers.
/// Encoding and decoding are const and thread-safe; add_special_token is not (call it
/// before sharing the tokenizer). Errors: std::invalid_argument naming the file for a
/// missing, unreadable, empty or incomplete vocabulary and for bad arguments;
/// std::out_of_range for an id outside the vocabulary.
class WordPieceTokenizer {
 public:
  explicit WordPieceTokenizer(const std::string& vocab_path, WordPieceOptions options = {});
  /// A BERT folder: vocab.txt (or, without one, tokenizer.json's WordPiece vocabulary, as
  /// transformers 5 saves it), and tokenizer_config.json when present (do_lower_case,
  /// strip_accents, tokenize_chinese_chars, the *_token names, special entries of
  /// added_tokens_decoder beyond the vocabulary such as LAVIS's [DEC]).
  static WordPieceTokenizer from_pretrained(const std::string& folder);
  ~WordPieceTokenizer();
  WordPieceTokenizer(WordPieceTokenizer&&) noexcept;
  WordPieceTokenizer& operator=(WordPieceTokenizer&&) noexcept;

  /// Makes `token` special (matched whole in text, skipped by decode(skip_special_tokens)).
  /// A token of the vocabulary keeps its id; a new one gets the next id, size() before.
  int64_t add_special_token(const std::string& token);

  std::vector<int64_t> encode(std::string_view text, const WordPieceEncodeOptions& options = {}) const;
  /// encode() of every text on up to `num_threads` threads.
  WordPieceBatch encode_batch(const std::vector<std::string_view>& texts,
                              const WordPieceEncodeOptions& options = {}, int num_threads = 1) const;
  /// The token strings of `text` ("un", "##aff", ...), without [CLS]/[SEP].
  std::vector<std::string> tokenize(std::string_view text) const;

  /// BertTokenizerFast.decode: tokens joined by spaces, "##" pieces glued to the previous
  /// one, the WordPiece decoder's cleanup, then transformers' clean_up_tokenization when
  /// `clean_up_tokenization_spaces`.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false,
                     bool clean_up_tokenization_spaces = true) const;

  int64_t token_to_id(std::string_view token) const;  ///< -1 when unknown
  const std::string& id_to_token(int64_t id) const;   ///< throws std::out_of_range
  bool is_special(int64_t id) const;
  std::vector<int64_t> special_ids() const;           ///< in the order they were made special

  int64_t vocab_size() const;  ///< lines of vocab.txt
  int64_t size() const;        ///< vocab_size() plus added special tokens
  int64_t unk_token_id() const;
  int64_t sep_token_id() const;
  int64_t pad_token_id() const;
  int64_t cls_token_id() const;
  int64_t mask_token_id() const;
  const WordPieceOptions& options() const;
  const std::string& vocab_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::text
