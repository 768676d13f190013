// Pre-LN transformer block (transformers' CLIPEncoderLayer).
#include "tessera/nn/transformer_block.h"

#include <ATen/ATen.h>

namespace tessera::nn {

TransformerBlockImpl::TransformerBlockImpl(TransformerBlockOptions options_) : options(options_) { reset(); }

void TransformerBlockImpl::reset() {
  const auto& o = options;
  using torch::nn::LayerNormOptions;
  self_attn = register_module("self_attn", Attention(AttentionOptions(o.dim(), o.num_heads()).dropout(o.attention_dropout())));
  layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(LayerNormOptions({o.dim()}).eps(o.layer_norm_eps())));
  mlp = register_module("mlp", Mlp(MlpOptions(o.dim(), o.mlp_dim()).act(o.act())));
  layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(LayerNormOptions({o.dim()}).eps(o.layer_norm_eps())));
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const AttentionArgs& args) {
  at::Tensor h = x + self_attn(layer_norm1(x), args);
  return h + mlp(layer_norm2(h));
}

}  // namespace tessera::nn
