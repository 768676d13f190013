#include "tessera/text/sentencepiece_trainer.h"

#include <c10/util/Exception.h>

#include <unordered_map>

#include "tessera/text/sentencepiece_shim.h"

namespace tessera::text {

std::string train_sentencepiece(const std::vector<std::string>& sentences,
                                const std::map<std::string, std::string>& options) {
  TORCH_CHECK(!sentences.empty(), "train_sentencepiece: no sentences to train on");
  TORCH_CHECK(!options.count("input") && !options.count("model_prefix"),
              "train_sentencepiece: the sentences come from memory and the model is returned; "
              "do not pass 'input' or 'model_prefix'");
  const std::unordered_map<std::string, std::string> kwargs(options.begin(), options.end());
  std::string model;
  const std::string error = spm_shim::api().train(sentences, kwargs, &model);
  TORCH_CHECK(error.empty(), "train_sentencepiece: ", error);
  return model;
}

}  // namespace tessera::text
