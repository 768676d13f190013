// Hugging Face checkpoint folders: config.json + model.safetensors (or shards), read and written
// by key with no renaming table.
#pragma once
#include "tessera/core/safetensors.h"

#include <nlohmann/json_fwd.hpp>

namespace torch::nn {
class Module;
}

namespace tessera::core {

/// Loads the folder's weights into `module` strictly. Keys ending in one of `ignore_suffixes`
/// (buffers older transformers versions saved, e.g. ".position_ids") are dropped first.
void load_pretrained_weights(torch::nn::Module& module, const std::string& dir,
                             const std::vector<std::string>& ignore_suffixes = {".position_ids"});

/// Writes `dir/config.json` and `dir/model.safetensors` (metadata format=pt, as transformers
/// requires), each atomically.
void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir);

}  // namespace tessera::core
