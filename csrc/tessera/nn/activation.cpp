// Activations matching transformers.activations (ACT2FN) numerically.
#include "tessera/nn/activation.h"

#include <ATen/ATen.h>

namespace tessera::nn {

Activation activation_from_name(const std::string& name) {
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return Activation::gelu_tanh;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "relu") return Activation::relu;
  TORCH_CHECK_VALUE(false, "unknown activation '", name,
                    "' (expected gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, silu, swish, relu)");
}

void check_activation(const std::string& name, const std::string& where, const std::string& key) {
  try {
    (void)activation_from_name(name);
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, where, ": ", key, ": ", e.what_without_backtrace());
  }
}

std::string activation_name(Activation act) {
  switch (act) {
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_pytorch_tanh";
    case Activation::quick_gelu: return "quick_gelu";
    case Activation::silu: return "silu";
    case Activation::relu: return "relu";
  }
  return "gelu";
}

at::Tensor apply_activation(const at::Tensor& x, Activation act) {
  switch (act) {
    case Activation::gelu: return at::gelu(x);
    case Activation::gelu_tanh: return at::gelu(x, "tanh");
    case Activation::quick_gelu: return x * at::sigmoid(x * 1.702);
    case Activation::silu: return at::silu(x);
    case Activation::relu: return at::relu(x);
  }
  return x;
}

}  // namespace tessera::nn
