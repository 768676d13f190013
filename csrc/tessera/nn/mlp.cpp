// MLP blocks (transformers' CLIPMLP and LlamaMLP).
#include "tessera/nn/mlp.h"

#include <ATen/ATen.h>

namespace tessera::nn {

using torch::nn::Linear;
using torch::nn::LinearOptions;

MlpImpl::MlpImpl(MlpOptions options_) : options(options_) { reset(); }

void MlpImpl::reset() {
  const int64_t out = options.out_features() > 0 ? options.out_features() : options.in_features();
  fc1 = register_module("fc1", Linear(LinearOptions(options.in_features(), options.hidden_features()).bias(options.bias())));
  fc2 = register_module("fc2", Linear(LinearOptions(options.hidden_features(), out).bias(options.bias())));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) { return fc2(apply_activation(fc1(x), options.act())); }

GatedMlpImpl::GatedMlpImpl(MlpOptions options_) : options(options_) { reset(); }

void GatedMlpImpl::reset() {
  const int64_t in = options.in_features(), hidden = options.hidden_features();
  const int64_t out = options.out_features() > 0 ? options.out_features() : in;
  gate_proj = register_module("gate_proj", Linear(LinearOptions(in, hidden).bias(options.bias())));
  up_proj = register_module("up_proj", Linear(LinearOptions(in, hidden).bias(options.bias())));
  down_proj = register_module("down_proj", Linear(LinearOptions(hidden, out).bias(options.bias())));
}

at::Tensor GatedMlpImpl::forward(const at::Tensor& x) {
  return down_proj(apply_activation(gate_proj(x), options.act()) * up_proj(x));
}

}  // namespace tessera::nn
