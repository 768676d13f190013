// Normalisation layers by kind: LayerNorm (Ba et al. 2016; torch.nn.LayerNorm, optional bias) and
// RMSNorm (Zhang & Sennrich 2019; transformers' LlamaRMSNorm: normalise in fp32, scale after).
#pragma once
#include "tessera/nn/module.h"

#include <torch/nn/pimpl.h>

namespace tessera::nn {

enum class NormKind { layer_norm, rms_norm };

/// Example: `Norm ln(768, NormKind::layer_norm, 1e-5); auto y = ln(x);`
class NormImpl : public Module<NormImpl> {
 public:
  NormImpl(int64_t dim, NormKind kind = NormKind::layer_norm, double eps = 1e-5, bool bias = true);
  void reset() override;
  /// weight = 1, bias = 0.
  void reset_parameters();
  at::Tensor forward(const at::Tensor& x) const;
  const at::Tensor& weight() const { return param(weight_); }
  const at::Tensor& bias() const { return param(bias_); }
  int64_t dim;
  NormKind kind;
  double eps;
  bool with_bias;

 private:
  Slot weight_, bias_;
};
TORCH_MODULE(Norm);

/// F.normalize(x, dim=-1): x / max(||x||_2, 1e-12), as contrastive heads normalize embeddings.
inline at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {-1}, true).clamp_min(1e-12); }

}  // namespace tessera::nn
