// Fuzzes CLIP's BPE tokenizer (text/clip_*: text cleaning, HTML unescaping, UTF-8 handling,
// pre-tokenizing regex, BPE merges and the word cache) on arbitrary bytes, with the merges file
// of ../shared/assets. Every id must be in the vocabulary and decode without error, and
// tokenize() must frame each row with <start_of_text> ... <end_of_text>.
#include <ATen/core/Tensor.h>

#include "fuzz_target.h"
#include "tessera/text/clip_tokenizer.h"

TESSERA_FUZZ_TARGET(clip_tokenizer) {
  using tessera::fuzz::require;
  static const tessera::text::ClipTokenizer tok(
      tessera::fuzz::shared_file("assets/clip_bpe_simple_vocab_16e6.txt.gz"));
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<int64_t> ids = tok.encode(text);
  for (int64_t id : ids) require(id >= 0 && id < tok.vocab_size(), "id outside the vocabulary");
  (void)tok.decode(ids);
  const at::Tensor rows = tok.tokenize({text}, 16);
  require(rows.size(0) == 1 && rows.size(1) == 16, "tokenize shape");
  require(rows[0][0].item<int64_t>() == tok.sot_token_id(), "row does not start with sot");
}
