// SentencePiece wrapper after google/sentencepiece's SentencePieceProcessor and the bos/eos
// handling of Meta's llama/tokenizer.py.
#include "tessera/text/sentencepiece_tokenizer.h"
#include "tessera/core/regular_file.h"

#include <c10/util/Exception.h>

#include <fstream>

#include "tessera/text/sentencepiece_shim.h"

namespace tessera::text {

struct SentencePieceTokenizer::Impl {
  std::unique_ptr<spm_shim::Processor> sp;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : impl_(std::make_unique<Impl>()) {
  // Check first: sentencepiece's own message for a missing file does not say which file.
  core::require_regular_file(model_path, "a SentencePiece model");
  TORCH_CHECK_VALUE(std::ifstream(model_path, std::ios::binary).good(),
                    "SentencePieceTokenizer: cannot open model file '", model_path, "'");
  impl_->sp.reset(spm_shim::api().new_processor());
  TORCH_CHECK(impl_->sp, "SentencePieceTokenizer: out of memory creating the processor");
  const std::string error = impl_->sp->load(model_path);
  TORCH_CHECK_VALUE(error.empty(), "SentencePieceTokenizer: '", model_path,
                    "' is not a valid SentencePiece model: ", error);
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept =
    default;

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool add_bos,
                                                    bool add_eos) const {
  std::vector<int> pieces;
  const std::string error = impl_->sp->encode(text, &pieces);
  TORCH_CHECK(error.empty(), "SentencePieceTokenizer.encode failed: ", error);
  std::vector<int64_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos && bos_id() >= 0) ids.push_back(bos_id());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos && eos_id() >= 0) ids.push_back(eos_id());
  return ids;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  const int64_t n = vocab_size();
  std::vector<int> pieces;
  pieces.reserve(ids.size());
  for (int64_t id : ids) {
    TORCH_CHECK_INDEX(id >= 0 && id < n, "SentencePieceTokenizer.decode: token id ", id,
                      " is outside the vocabulary [0, ", n, ")");
    pieces.push_back(static_cast<int>(id));
  }
  std::string text;
  const std::string error = impl_->sp->decode(pieces, &text);
  TORCH_CHECK(error.empty(), "SentencePieceTokenizer.decode failed: ", error);
  return text;
}

int64_t SentencePieceTokenizer::bos_id() const { return impl_->sp->bos_id(); }
int64_t SentencePieceTokenizer::eos_id() const { return impl_->sp->eos_id(); }
int64_t SentencePieceTokenizer::pad_id() const { return impl_->sp->pad_id(); }
int64_t SentencePieceTokenizer::unk_id() const { return impl_->sp->unk_id(); }
int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp->piece_size(); }

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  TORCH_CHECK_INDEX(id >= 0 && id < vocab_size(), "SentencePieceTokenizer.id_to_piece: id ",
                    id, " is outside the vocabulary [0, ", vocab_size(), ")");
  return impl_->sp->id_to_piece(static_cast<int>(id));
}

int64_t SentencePieceTokenizer::piece_to_id(const std::string& piece) const {
  return impl_->sp->piece_to_id(piece);
}

}  // namespace tessera::text
