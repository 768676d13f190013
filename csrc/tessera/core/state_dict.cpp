// Strict state-dict loading with errors that name keys and shapes, as torch.nn.Module does.
#include "tessera/core/state_dict.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <set>
#include <sstream>

namespace tessera::core {

TensorDict state_dict(const torch::nn::Module& module) {
  TensorDict out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out[b.key()] = b.value();
  return out;
}

namespace {
std::string join_sample(const std::vector<std::string>& keys) {
  std::ostringstream ss;
  for (size_t i = 0; i < keys.size() && i < 20; ++i) ss << (i ? ", " : "") << keys[i];
  if (keys.size() > 20) ss << ", ... (" << keys.size() << " in all)";
  return ss.str();
}
}  // namespace

std::vector<std::string> load_state_dict(torch::nn::Module& module, const TensorDict& tensors,
                                         bool strict, const std::string& source) {
  TensorDict own = state_dict(module);
  std::vector<std::string> missing, unexpected, used;
  for (const auto& [k, _] : own)
    if (!tensors.count(k)) missing.push_back(k);
  for (const auto& [k, _] : tensors)
    if (!own.count(k)) unexpected.push_back(k);
  if (strict) {
    TORCH_CHECK_VALUE(missing.empty() && unexpected.empty(), "error loading ", source, " into ",
                      module.name(), ": missing keys [", join_sample(missing), "]; unexpected keys [",
                      join_sample(unexpected), "]");
  }
  at::NoGradGuard no_grad;
  for (auto& [k, dst] : own) {
    auto it = tensors.find(k);
    if (it == tensors.end()) continue;
    const at::Tensor& src = it->second;
    TORCH_CHECK_VALUE(src.sizes() == dst.sizes(), "error loading ", source, ": key '", k, "' has shape ",
                      src.sizes(), " but the model expects ", dst.sizes());
    dst.copy_(src);
    used.push_back(k);
  }
  return used;
}

}  // namespace tessera::core
