// Hugging Face checkpoint folders: config.json + model.safetensors (or shards), read and written
// by key after the module's declared weight-loading rules.
#pragma once
#include "tessera/core/safetensors.h"
#include "tessera/core/weight_loading.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <utility>
#include <vector>

namespace torch::nn {
class Module;
}

namespace tessera::core {

/// Loads the folder's weights into `module` strictly, after the rules its family declared for the
/// module's class (weight_loading.h): a CLIPVisionTransformer loads from a CLIP folder, a
/// ViTMAEModel from a ViTMAEForPreTraining one, as in transformers.
void load_pretrained_weights(torch::nn::Module& module, const std::string& dir);
/// The same after `how` in place of the declared rules.
void load_pretrained_weights(torch::nn::Module& module, const std::string& dir, const WeightLoading& how);

/// Writes `dir/config.json` and `dir/model.safetensors` (metadata format=pt, as transformers
/// requires), each atomically.
void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir);

}  // namespace tessera::core
