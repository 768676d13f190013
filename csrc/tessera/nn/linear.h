// y = x W^T + b, with `weight` [out, in] and optional `bias` read at call time (see module.h).
#pragma once
#include "tessera/nn/module.h"

#include <torch/nn/pimpl.h>

namespace tessera::nn {

/// Example: `Linear proj(768, 512, /*bias=*/false); auto y = proj(x);`
class LinearImpl : public Module<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  void reset() override;
  /// LibTorch's / PyTorch's default: kaiming-uniform weight, uniform bias in ±1/sqrt(in).
  void reset_parameters();
  at::Tensor forward(const at::Tensor& x) const;
  const at::Tensor& weight() const { return param(weight_); }
  const at::Tensor& bias() const { return param(bias_); }
  int64_t in_features, out_features;
  bool with_bias;

 private:
  Slot weight_, bias_;
};
TORCH_MODULE(Linear);

}  // namespace tessera::nn
