// save_pretrained / from_pretrained folder layout of transformers' PreTrainedModel.
#include "tessera/core/pretrained.h"

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/state_dict.h"

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

namespace tessera::core {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir,
                             const std::vector<std::string>& ignore_suffixes) {
  TensorDict tensors = load_checkpoint_dir(dir);
  for (auto it = tensors.begin(); it != tensors.end();) {
    bool drop = false;
    for (const auto& s : ignore_suffixes) drop = drop || ends_with(it->first, s);
    it = drop ? tensors.erase(it) : std::next(it);
  }
  load_state_dict(module, tensors, /*strict=*/true, "checkpoint " + dir);
}

void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir) {
  make_dirs(dir);
  save_safetensors(dir + "/model.safetensors", state_dict(module), {{"format", "pt"}});
  write_json_file(dir + "/config.json", config);
}

}  // namespace tessera::core
