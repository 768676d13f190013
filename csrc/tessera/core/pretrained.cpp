// save_pretrained / from_pretrained folder layout of transformers' PreTrainedModel.
#include "tessera/core/pretrained.h"

#include "tessera/core/atomic_file.h"
#include "tessera/core/json_config.h"
#include "tessera/core/state_dict.h"

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <regex>
#include <set>

namespace tessera::core {

namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void load_pretrained_weights(torch::nn::Module& module, const std::string& dir, const WeightLoading& how) {
  TensorDict tensors = load_checkpoint_dir(dir);
  std::set<std::string> own;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) own.insert(p.key());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) own.insert(b.key());
  std::vector<std::pair<std::regex, std::string>> aliases;
  for (const auto& [pattern, repl] : how.key_aliases) aliases.emplace_back(std::regex(pattern), repl);
  TensorDict renamed;
  for (auto& [key, value] : tensors) {
    bool drop = false;
    for (const auto& s : how.ignore_suffixes) drop = drop || ends_with(key, s);
    if (drop) continue;
    std::string name = key;
    if (!own.count(name)) {
      for (const auto& [re, repl] : aliases) {
        std::string candidate = std::regex_replace(key, re, repl, std::regex_constants::format_first_only);
        if (candidate != key && own.count(candidate)) {
          name = candidate;
          break;
        }
      }
    }
    if (how.ignore_unexpected && !own.count(name)) continue;
    renamed[name] = value;
  }
  for (const auto& [target, source] : how.tied_weights) {
    if (!renamed.count(target) && renamed.count(source)) renamed[target] = renamed.at(source);
  }
  load_state_dict(module, renamed, /*strict=*/true, "checkpoint " + dir);
}

void save_pretrained(const torch::nn::Module& module, const nlohmann::json& config, const std::string& dir) {
  make_dirs(dir);
  save_safetensors(dir + "/model.safetensors", state_dict(module), {{"format", "pt"}});
  write_json_file(dir + "/config.json", config);
}

}  // namespace tessera::core
