// save_pretrained / from_pretrained folder layout of transformers' PreTrainedModel.
#include "tessera/core/pretrained.h"
#include "tessera/core/regular_file.h"

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/state_dict.h"

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <fstream>
#include <set>

namespace tessera::core {

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir) {
  load_pretrained_weights(module, dir, weight_loading(module));
}

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir, const WeightLoading& how) {
  std::set<std::string> own;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) own.insert(p.key());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) own.insert(b.key());
  const std::string config_file = dir + "/config.json";
  require_regular_file(config_file, "the folder's config.json");  // before the probe: opening a FIFO blocks
  const bool has_config = std::ifstream(config_file).good();
  const nlohmann::json config = has_config ? read_json_file(config_file) : nlohmann::json();
  std::string source = "checkpoint " + dir;
  TensorDict tensors = rename_for_module(load_checkpoint_dir(dir), own, how, config, source);
  if (!has_config && !how.base_config_key.empty()) {  // a parent's folder is known by its config only
    source += " (no config.json: a part loads from its parent's folder through the '" + how.base_config_key +
              "' entry of the parent's config.json)";
  }
  load_state_dict(module, tensors, /*strict=*/true, source);
}

void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir) {
  make_dirs(dir);
  save_safetensors(dir + "/model.safetensors", state_dict(module), {{"format", "pt"}});
  write_json_file(dir + "/config.json", config);
}

}  // namespace tessera::core
