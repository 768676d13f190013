// Activation functions by their Hugging Face `hidden_act` names (transformers' ACT2FN).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace tessera::nn {

enum class Activation { gelu, gelu_tanh, quick_gelu, silu, relu };

/// "gelu" (exact erf), "gelu_new"/"gelu_pytorch_tanh"/"gelu_fast" (tanh), "quick_gelu"
/// (x * sigmoid(1.702 x), OpenAI CLIP), "silu"/"swish", "relu". Unknown names are an error.
Activation activation_from_name(const std::string& name);
/// An options check: fails naming `where` and the config key when `name` is unknown (the
/// layers read the name only when they are built or run).
void check_activation(const std::string& name, const std::string& where, const std::string& key = "hidden_act");
std::string activation_name(Activation act);
at::Tensor apply_activation(const at::Tensor& x, Activation act);

}  // namespace tessera::nn
