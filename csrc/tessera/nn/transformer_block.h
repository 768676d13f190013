// Pre-norm transformer block (x + attn(ln1(x)); x + mlp(ln2(x))) with CLIP's parameter names:
// layer_norm1, self_attn, layer_norm2, mlp. Used by CLIP's towers and LLaVA's vision tower.
#pragma once
#include "tessera/nn/attention.h"
#include "tessera/nn/mlp.h"

#include <torch/nn/modules/normalization.h>

namespace tessera::nn {

struct TransformerBlockOptions {
  TransformerBlockOptions(int64_t dim, int64_t num_heads, int64_t mlp_dim)
      : dim_(dim), num_heads_(num_heads), mlp_dim_(mlp_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(int64_t, mlp_dim);
  TORCH_ARG(Activation, act) = Activation::gelu;
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  TORCH_ARG(double, attention_dropout) = 0.0;
};

class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  explicit TransformerBlockImpl(TransformerBlockOptions options);
  void reset() override;
  /// x [B, L, dim] -> [B, L, dim]
  at::Tensor forward(const at::Tensor& x, const AttentionArgs& args = {});
  TransformerBlockOptions options;
  Attention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(TransformerBlock);

}  // namespace tessera::nn
