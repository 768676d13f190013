// Multi-head attention: one kernel entry point (`attention`, on scaled_dot_product_attention so
// the flash / memory-efficient kernels are picked per device) and one name-free module whose
// projections sit wherever a family's layout puts them (CLIP `q_proj`, ViT `attention.query`).
// References: Vaswani et al. 2017; transformers' CLIPAttention, ViTAttention, LlamaAttention.
#pragma once
#include "tessera/nn/layer.h"
#include "tessera/nn/linear.h"

#include <torch/arg.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera::nn {

/// q [B, H, Q, D], k/v [B, Hkv, K, D] (H a multiple of Hkv: grouped-query attention).
/// `mask`: additive (floating point) or boolean (true: attend, as SDPA), broadcastable to
/// [B, H, Q, K] (see attention_mask.h), or undefined.
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
  /// Input size of the key/value projections (cross-attention over another width); 0 = embed_dim.
  TORCH_ARG(int64_t, kv_input_dim) = 0;
  /// Per-projection biases (BEiT has none on the key; LLaMA none at all).
  TORCH_ARG(bool, q_bias) = true;
  TORCH_ARG(bool, k_bias) = true;
  TORCH_ARG(bool, v_bias) = true;
  TORCH_ARG(bool, o_bias) = true;
  TORCH_ARG(double, dropout) = 0.0;
};

/// Where the four projections sit below the attention module, and the Python classes of the
/// containers on the way (ViT: {"attention", "ViTSelfAttention"}, {"output", "ViTSelfOutput"}).
struct AttentionLayout {
  std::string class_name = "Attention";
  std::string q = "q_proj", k = "k_proj", v = "v_proj", o = "out_proj";
  std::vector<std::pair<std::string, std::string>> containers;
};

/// Example: `Attention attn(AttentionOptions(768, 12)); auto y = attn->forward(x, mask, args);`
class AttentionImpl : public Module<AttentionImpl> {
 public:
  explicit AttentionImpl(AttentionOptions options, AttentionLayout layout = {});
  void reset() override;
  /// Self-attention, x [B, Q, embed_dim] -> [B, Q, embed_dim]. `mask` is additive (it already
  /// holds any position bias); causality, rotary tables and the KV cache come from `args`.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask = {}, const LayerArgs& args = {}) const;
  /// Cross-attention from x to args.context, masked by args.context_mask.
  at::Tensor forward_cross(const at::Tensor& x, const LayerArgs& args) const;

  AttentionOptions options;
  AttentionLayout layout;
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  int64_t heads() const { return heads_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }

 private:
  at::Tensor attend(const at::Tensor& x, const at::Tensor& src, const at::Tensor& mask, bool causal,
                    const LayerArgs* rope_and_cache) const;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
};
TORCH_MODULE(Attention);

}  // namespace tessera::nn
