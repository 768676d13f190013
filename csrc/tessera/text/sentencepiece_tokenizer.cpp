// SentencePiece wrapper after google/sentencepiece's SentencePieceProcessor and the bos/eos
// handling of Meta's llama/tokenizer.py.
#include "tessera/text/sentencepiece_tokenizer.h"

#include <c10/util/Exception.h>
#include <sentencepiece_processor.h>

#include <fstream>

namespace tessera::text {

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_path)
    : impl_(std::make_unique<Impl>()) {
  // Check first: sentencepiece's own message for a missing file does not say which file.
  TORCH_CHECK(std::ifstream(model_path, std::ios::binary).good(),
              "SentencePieceTokenizer: cannot open model file '", model_path, "'");
  const auto status = impl_->sp.Load(model_path);
  TORCH_CHECK(status.ok(), "SentencePieceTokenizer: '", model_path,
              "' is not a valid SentencePiece model: ", status.ToString());
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept =
    default;

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool add_bos,
                                                    bool add_eos) const {
  std::vector<int> pieces;
  const auto status = impl_->sp.Encode(text, &pieces);
  TORCH_CHECK(status.ok(), "SentencePieceTokenizer.encode failed: ", status.ToString());
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
  const auto status = impl_->sp.Decode(pieces, &text);
  TORCH_CHECK(status.ok(), "SentencePieceTokenizer.decode failed: ", status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::bos_id() const { return impl_->sp.bos_id(); }
int64_t SentencePieceTokenizer::eos_id() const { return impl_->sp.eos_id(); }
int64_t SentencePieceTokenizer::pad_id() const { return impl_->sp.pad_id(); }
int64_t SentencePieceTokenizer::unk_id() const { return impl_->sp.unk_id(); }
int64_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }

std::string SentencePieceTokenizer::id_to_piece(int64_t id) const {
  TORCH_CHECK_INDEX(id >= 0 && id < vocab_size(), "SentencePieceTokenizer.id_to_piece: id ",
                    id, " is outside the vocabulary [0, ", vocab_size(), ")");
  return impl_->sp.IdToPiece(static_cast<int>(id));
}

int64_t SentencePieceTokenizer::piece_to_id(const std::string& piece) const {
  return impl_->sp.PieceToId(piece);
}

}  // namespace tessera::text
