// save_pretrained / from_pretrained folder layout of transformers' PreTrainedModel.
#include "tessera/core/pretrained.h"

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/state_dict.h"

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <fstream>
#include <set>

namespace tessera::core {

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir) {
  load_pretrained_weights(module, dir, weight_loading(module.name()));
}

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir, const WeightLoading& how) {
  std::set<std::string> own;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) own.insert(p.key());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) own.insert(b.key());
  const std::string config_file = dir + "/config.json";
  const nlohmann::json config = std::ifstream(config_file).good() ? read_json_file(config_file) : nlohmann::json();
  TensorDict tensors = rename_for_module(load_checkpoint_dir(dir), own, how, config, "checkpoint " + dir);
  load_state_dict(module, tensors, /*strict=*/true, "checkpoint " + dir);
}

void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir) {
  make_dirs(dir);
  save_safetensors(dir + "/model.safetensors", state_dict(module), {{"format", "pt"}});
  write_json_file(dir + "/config.json", config);
}

}  // namespace tessera::core
