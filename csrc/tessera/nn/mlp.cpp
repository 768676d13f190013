// Two-layer MLP on call-time parameters.
#include "tessera/nn/mlp.h"

#include <ATen/ATen.h>

namespace tessera::nn {

MlpImpl::MlpImpl(MlpOptions options_) : Module("Mlp"), options(std::move(options_)) { reset(); }

void MlpImpl::reset() {
  const int64_t out = options.out_features() > 0 ? options.out_features() : options.in_features();
  fc1 = register_module(options.fc1_name(), Linear(options.in_features(), options.hidden_features(), options.bias()));
  fc2 = register_module(options.fc2_name(), Linear(options.hidden_features(), out, options.bias()));
}

at::Tensor MlpImpl::forward(const at::Tensor& x) const {
  return fc2->forward(apply_activation(fc1->forward(x), options.act()));
}

}  // namespace tessera::nn
