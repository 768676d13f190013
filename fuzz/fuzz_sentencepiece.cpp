// Fuzzes the SentencePiece front end (text/sentencepiece_tokenizer.cpp) on arbitrary bytes with
// llama2.c's 32000-piece model from ../shared/assets: encode with and without bos/eos, decode of
// the ids, id_to_piece / piece_to_id of every id. Ids must lie in [0, vocab_size).
#include "fuzz_target.h"
#include "tessera/text/sentencepiece_tokenizer.h"

TESSERA_FUZZ_TARGET(sentencepiece) {
  using tessera::fuzz::require;
  static const tessera::text::SentencePieceTokenizer sp(
      tessera::fuzz::shared_file("assets/llama2c_tokenizer.model"));
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool bos = size > 0 && (data[0] & 1), eos = size > 0 && (data[0] & 2);
  const std::vector<int64_t> ids = sp.encode(text, bos, eos);
  for (int64_t id : ids) {
    require(id >= 0 && id < sp.vocab_size(), "id outside the vocabulary");
    require(sp.piece_to_id(sp.id_to_piece(id)) == id || id == sp.unk_id(), "piece does not map back");
  }
  (void)sp.decode(ids);
}
