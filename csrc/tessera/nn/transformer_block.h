// A generic transformer layer: the math of every family's block, with the parameter names left to
// a layout. Pre- or post-norm, LayerNorm or RMSNorm, layer scale, stochastic depth, per-projection
// biases, plain or gated MLP, an additive position bias (per layer or shared), optional
// cross-attention and a separate feed-forward for learned query tokens (Q-Former).
// References: CLIPEncoderLayer, ViTLayer, BeitLayer, LlamaDecoderLayer, Blip2QFormerLayer.
#pragma once
#include "tessera/nn/activation.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/layer.h"
#include "tessera/nn/norm.h"

#include <functional>
#include <memory>

namespace tessera::nn {

/// A module that gives a layer its own additive attention bias [H, L, L] for L tokens (BEiT's
/// per-layer relative position bias). Implemented by the family; `args` carries the patch grid.
class PositionBias {
 public:
  virtual ~PositionBias() = default;
  virtual at::Tensor attention_bias(const LayerArgs& args, int64_t seq_len) const = 0;
};

struct TransformerBlockOptions {
  TransformerBlockOptions(int64_t dim, int64_t num_heads, int64_t mlp_dim)
      : dim_(dim), num_heads_(num_heads), mlp_dim_(mlp_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, num_heads);
  TORCH_ARG(int64_t, mlp_dim);
  TORCH_ARG(int64_t, num_kv_heads) = 0;
  TORCH_ARG(int64_t, head_dim) = 0;
  TORCH_ARG(Activation, act) = Activation::gelu;
  /// down(act(gate(x)) * up(x)) instead of fc2(act(fc1(x))).
  TORCH_ARG(bool, gated_mlp) = false;
  TORCH_ARG(NormKind, norm) = NormKind::layer_norm;
  TORCH_ARG(double, norm_eps) = 1e-5;
  /// Norm before each sublayer (x + f(norm(x))) or after the residual (norm(x + f(x)), BERT).
  TORCH_ARG(bool, pre_norm) = true;
  TORCH_ARG(bool, q_bias) = true;
  TORCH_ARG(bool, k_bias) = true;
  TORCH_ARG(bool, v_bias) = true;
  TORCH_ARG(bool, o_bias) = true;
  TORCH_ARG(bool, mlp_bias) = true;
  /// Initial value of the layer-scale vectors; 0 disables layer scale (CaiT / BEiT).
  TORCH_ARG(double, layer_scale_init) = 0.0;
  /// Stochastic depth rate of this layer (Huang et al. 2016), active in training only.
  TORCH_ARG(double, drop_path) = 0.0;
  TORCH_ARG(double, attention_dropout) = 0.0;
  /// Dropout after each sublayer's output projection (BERT's hidden_dropout_prob).
  TORCH_ARG(double, hidden_dropout) = 0.0;
  /// Width of the cross-attention source; 0 means no cross-attention.
  TORCH_ARG(int64_t, cross_attention_dim) = 0;
  /// A separate feed-forward for the first `query_length` tokens (Q-Former's learned queries).
  TORCH_ARG(bool, query_ffn) = false;
  /// Builds this layer's own PositionBias module (registered at layout.position_bias).
  TORCH_ARG(std::function<std::shared_ptr<torch::nn::Module>()>, position_bias) = nullptr;
};

/// Hugging Face names of a layer's parts, relative to the layer. Empty = the part is absent.
struct BlockLayout {
  std::string class_name = "TransformerBlock";
  /// Python classes of containers on the paths below (e.g. {"mlp", "CLIPMLP"}).
  std::vector<std::pair<std::string, std::string>> containers;
  std::string attn = "self_attn";  ///< the attention module
  AttentionLayout attn_layout;     ///< projections below `attn`
  std::string attn_norm = "layer_norm1";
  std::string cross_attn, cross_norm;  ///< cross-attention module and its norm
  AttentionLayout cross_layout;
  std::string mlp_norm = "layer_norm2";
  std::string fc1 = "mlp.fc1", fc2 = "mlp.fc2";  ///< gated: fc1 = up_proj, fc2 = down_proj
  std::string gate = "mlp.gate_proj";            ///< used when gated_mlp
  std::string query_fc1, query_fc2, query_norm;  ///< the query feed-forward (query_ffn)
  std::string layer_scale1 = "lambda_1", layer_scale2 = "lambda_2";
  std::string position_bias = "relative_position_bias";
};

/// One layer; what an Encoder stacks. Example:
///   TransformerBlock b(TransformerBlockOptions(768, 12, 3072), clip_layer_layout());
class TransformerBlockImpl : public Module<TransformerBlockImpl>, public Layer {
 public:
  TransformerBlockImpl(TransformerBlockOptions options, BlockLayout layout = {});
  void reset() override;
  /// x [B, L, dim] -> [B, L, dim]
  at::Tensor forward(const at::Tensor& x, const LayerArgs& args = {}) const;
  at::Tensor forward_layer(const at::Tensor& x, const LayerArgs& args) override { return forward(x, args); }

  TransformerBlockOptions options;
  BlockLayout layout;
  Attention self_attn{nullptr}, cross_attn{nullptr};
  Norm attn_norm{nullptr}, cross_norm{nullptr}, mlp_norm{nullptr}, query_norm{nullptr};
  Linear fc1{nullptr}, fc2{nullptr}, gate{nullptr}, query_fc1{nullptr}, query_fc2{nullptr};
  const at::Tensor& layer_scale1() const { return param(ls1_); }
  const at::Tensor& layer_scale2() const { return param(ls2_); }

 private:
  at::Tensor sublayer(const at::Tensor& x, const Norm& norm, const std::function<at::Tensor(const at::Tensor&)>& f,
                      const at::Tensor& scale) const;
  at::Tensor feed_forward(const at::Tensor& x, const Linear& up, const Linear& down, const Linear& gate_proj) const;
  std::shared_ptr<torch::nn::Module> position_bias_;
  Slot ls1_, ls2_;
};
TORCH_MODULE(TransformerBlock);

}  // namespace tessera::nn
