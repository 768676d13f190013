// libtessera_sentencepiece: google/sentencepiece behind tessera's Api (text/sentencepiece_shim.h).
// Links SentencePiece and the C++ runtime only, never LibTorch, so that a deep-bound open resolves
// every name SentencePiece uses inside SentencePiece.
#include "tessera/text/sentencepiece_shim.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>

namespace tessera::text::spm_shim {
namespace {

template <class F>
std::string guarded(F&& f) {  // nothing may unwind into the caller's library
  try {
    return f();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error in SentencePiece";
  }
}

class SpmProcessor final : public Processor {
 public:
  std::string load(const std::string& path) override {
    return guarded([&] { return message(sp_.Load(path)); });
  }
  std::string encode(const std::string& text, std::vector<int>* ids) const override {
    return guarded([&] { return message(sp_.Encode(text, ids)); });
  }
  std::string decode(const std::vector<int>& ids, std::string* text) const override {
    return guarded([&] { return message(sp_.Decode(ids, text)); });
  }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int pad_id() const override { return sp_.pad_id(); }
  int unk_id() const override { return sp_.unk_id(); }
  int piece_size() const override { return sp_.GetPieceSize(); }
  std::string id_to_piece(int id) const override { return sp_.IdToPiece(id); }
  int piece_to_id(const std::string& piece) const override { return sp_.PieceToId(piece); }

 private:
  static std::string message(const sentencepiece::util::Status& s) {
    return s.ok() ? std::string() : s.ToString();
  }
  sentencepiece::SentencePieceProcessor sp_;
};

class VectorIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorIterator(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  size_t i_ = 0;
};

Processor* new_processor() {
  try {
    return new SpmProcessor();
  } catch (...) {
    return nullptr;
  }
}

std::string train(const std::vector<std::string>& sentences,
                  const std::unordered_map<std::string, std::string>& options, std::string* model) {
  return guarded([&] {
    VectorIterator it(sentences);
    const auto status = sentencepiece::SentencePieceTrainer::Train(options, &it, model);
    return status.ok() ? std::string() : status.ToString();
  });
}

const Api kApi{kVersion, &new_processor, &train};

}  // namespace
}  // namespace tessera::text::spm_shim

extern "C" __attribute__((visibility("default"))) const tessera::text::spm_shim::Api*
tessera_sentencepiece_api() {
  return &tessera::text::spm_shim::kApi;
}
