// Multi-head attention: one kernel entry point (`attention`, on scaled_dot_product_attention so
// the flash / memory-efficient kernels are picked per device) and one module with Hugging Face
// parameter names (q_proj, k_proj, v_proj, out_proj or o_proj).
// References: Vaswani et al. 2017; transformers' CLIPAttention / LlamaAttention.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>

namespace tessera::nn {

class KVCache;

/// q [B, H, Q, D], k/v [B, Hkv, K, D] (H a multiple of Hkv: grouped-query attention).
/// `mask`: additive, broadcastable to [B, H, Q, K] (see attention_mask.h) or undefined.
/// `causal`: query i sees keys up to K - Q + i (bottom-right aligned, right for KV caches).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& mask = {}, bool causal = false, double dropout_p = 0.0,
                     std::optional<double> scale = std::nullopt);

struct AttentionOptions {
  AttentionOptions(int64_t embed_dim, int64_t num_heads) : embed_dim_(embed_dim), num_heads_(num_heads) {}
  /// Model width (query input and output size).
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, num_heads);
  /// Key/value heads for grouped-query attention; 0 means num_heads.
  TORCH_ARG(int64_t, num_kv_heads) = 0;
  /// Per-head size; 0 means embed_dim / num_heads.
  TORCH_ARG(int64_t, head_dim) = 0;
  /// Input size of k_proj/v_proj (cross-attention over another width); 0 means embed_dim.
  TORCH_ARG(int64_t, kv_input_dim) = 0;
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(bool, out_bias) = true;
  /// Name of the output projection: "out_proj" (CLIP) or "o_proj" (LLaMA).
  TORCH_ARG(std::string, out_name) = "out_proj";
  TORCH_ARG(double, dropout) = 0.0;
};

/// Per-call inputs of an attention layer beyond the hidden states.
struct AttentionArgs {
  at::Tensor mask;        ///< additive mask, broadcastable to [B, H, Q, K]
  bool causal = false;    ///< add a causal mask
  at::Tensor context;     ///< cross-attention keys/values source [B, K, kv_input_dim]
  KVCache* cache = nullptr;
  int64_t layer_idx = 0;  ///< slot in the cache
  at::Tensor rope_cos, rope_sin;  ///< rotary tables [B or 1, Q, head_dim], applied to q and k
};

/// Example: `Attention attn(AttentionOptions(768, 12)); auto y = attn(x, {});`
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(AttentionOptions options);
  void reset() override;
  /// x [B, Q, embed_dim] -> [B, Q, embed_dim]
  at::Tensor forward(const at::Tensor& x, const AttentionArgs& args = {});

  AttentionOptions options;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
};
TORCH_MODULE(Attention);

}  // namespace tessera::nn
