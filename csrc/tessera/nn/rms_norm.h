// RMSNorm (Zhang & Sennrich 2019) as transformers' LlamaRMSNorm: normalise in fp32, scale after.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

namespace tessera::nn {

class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  explicit RMSNormImpl(int64_t dim, double eps = 1e-6) : dim_(dim), eps_(eps) { reset(); }
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  at::Tensor weight;

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace tessera::nn
