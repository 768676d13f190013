// Hugging Face checkpoint folders: config.json + model.safetensors (or shards), read and written
// by key with no renaming table.
#pragma once
#include "tessera/core/safetensors.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tessera::core {

/// How checkpoint keys map onto a module's, as the Python loader's class attributes do.
struct WeightLoading {
  /// Keys ending in one of these are dropped (buffers older transformers versions saved).
  std::vector<std::string> ignore_suffixes{".position_ids"};
  /// (regex, replacement): a key the module lacks is renamed by the first alias that turns it into
  /// one it has (other layouts of the same weights: `^vision_model\.` -> "" for a tower).
  std::vector<std::pair<std::string, std::string>> key_aliases;
  /// Tied key -> its source, copied when the checkpoint omits it (`lm_head.weight` from the embeddings).
  std::vector<std::pair<std::string, std::string>> tied_weights;
  /// Drop keys the module does not have (a part loading from its parent's folder); every key of
  /// the module must still be present.
  bool ignore_unexpected = false;
};

/// Loads the folder's weights into `module` strictly after `how`'s renaming.
void load_pretrained_weights(torch::nn::Module& module, const std::string& dir, const WeightLoading& how = {});

/// Writes `dir/config.json` and `dir/model.safetensors` (metadata format=pt, as transformers
/// requires), each atomically.
void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir);

}  // namespace tessera::core
