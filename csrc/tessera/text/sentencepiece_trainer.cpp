#include "tessera/text/sentencepiece_trainer.h"

#include <c10/util/Exception.h>
#include <sentencepiece_trainer.h>

#include <unordered_map>

namespace tessera::text {
namespace {

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

}  // namespace

std::string train_sentencepiece(const std::vector<std::string>& sentences,
                                const std::map<std::string, std::string>& options) {
  TORCH_CHECK(!sentences.empty(), "train_sentencepiece: no sentences to train on");
  TORCH_CHECK(!options.count("input") && !options.count("model_prefix"),
              "train_sentencepiece: the sentences come from memory and the model is returned; "
              "do not pass 'input' or 'model_prefix'");
  std::unordered_map<std::string, std::string> kwargs(options.begin(), options.end());
  VectorIterator it(sentences);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, &it, &model);
  TORCH_CHECK(status.ok(), "train_sentencepiece: ", status.ToString());
  return model;
}

}  // namespace tessera::text
