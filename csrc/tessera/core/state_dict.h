// Moving weights between a torch::nn::Module and a name -> tensor dictionary, strictly:
// every missing, unexpected or mis-shaped key is reported by name.
#pragma once
#include "tessera/core/safetensors.h"

namespace torch::nn {
class Module;
}

namespace tessera::core {

/// Parameters and buffers of `module` under their dotted (Hugging Face) names.
TensorDict state_dict(const torch::nn::Module& module);

/// Copies `tensors` into the module's parameters and buffers (dtype/device converted).
/// strict: missing and unexpected keys are an error that lists them. Returns the keys used.
std::vector<std::string> load_state_dict(torch::nn::Module& module, const TensorDict& tensors,
                                         bool strict = true, const std::string& source = "state dict");

}  // namespace tessera::core
