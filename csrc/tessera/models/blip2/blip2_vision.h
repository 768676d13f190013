// BLIP-2's image tower (an EVA ViT-g in the paper; transformers' Blip2VisionModel): class + patch
// embeddings with a learned position table, pre-norm layers whose attention has one fused `qkv`
// projection, and `post_layernorm` on every token (BLIP-2 feeds all of them to the Q-Former).
#pragma once
#include "tessera/models/blip2/blip2_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/activation.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/patch_embed.h"

namespace tessera::models {

/// `embeddings.{class_embedding [1,1,D], patch_embedding.{weight,bias}, position_embedding [1,1+N,D]}`
class Blip2VisionEmbeddingsImpl : public nn::Module<Blip2VisionEmbeddingsImpl> {
 public:
  explicit Blip2VisionEmbeddingsImpl(Blip2VisionOptions options);
  void reset() override;
  /// [B, 3, H, W] -> [B, 1 + patches, D]; other sizes than image_size need interpolate_pos_encoding.
  at::Tensor forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false) const;
  const at::Tensor& class_embedding() const { return param(class_embedding_); }
  const at::Tensor& position_embedding() const { return param(position_embedding_); }
  Blip2VisionOptions options;
  nn::PatchEmbed patch_embedding{nullptr};

 private:
  nn::Slot class_embedding_, position_embedding_;
};
TORCH_MODULE(Blip2VisionEmbeddings);

/// Self-attention with one fused projection: `qkv` [3D, D] (its bias, when present, starts with a
/// zero key third) and `projection`.
class Blip2AttentionImpl : public nn::Module<Blip2AttentionImpl> {
 public:
  Blip2AttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, double dropout);
  void reset() override;
  at::Tensor forward(const at::Tensor& x) const;
  int64_t dim, heads;
  bool qkv_bias;
  double dropout;
  nn::Linear qkv{nullptr}, projection{nullptr};
};
TORCH_MODULE(Blip2Attention);

/// Blip2EncoderLayer: x + attn(norm1(x)), then + mlp(norm2(.)).
class Blip2EncoderLayerImpl : public nn::Module<Blip2EncoderLayerImpl>, public nn::Layer {
 public:
  explicit Blip2EncoderLayerImpl(Blip2VisionOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor forward_layer(const at::Tensor& x, const nn::LayerArgs&) override { return forward(x); }
  Blip2VisionOptions options;
  Blip2Attention self_attn{nullptr};
  nn::Norm layer_norm1{nullptr}, layer_norm2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};  ///< mlp.fc1, mlp.fc2
  nn::Activation act;
};
TORCH_MODULE(Blip2EncoderLayer);

/// Example: `Blip2VisionModel vit(Blip2VisionOptions().hidden_size(48)); auto out = vit->forward(px);`
class Blip2VisionModelImpl : public nn::Module<Blip2VisionModelImpl> {
 public:
  explicit Blip2VisionModelImpl(Blip2VisionOptions options = {});
  void reset() override;
  /// transformers' Blip2PreTrainedModel._init_weights.
  void init_weights();
  /// last_hidden_state: post_layernorm(encoder output) [B, 1 + patches, D];
  /// pooler_output: post_layernorm applied once more to the class token (as transformers).
  PooledOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = false,
                       bool interpolate_pos_encoding = false);
  /// timm's forward_features: post-normed token features [B, 1 + patches, D].
  at::Tensor forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  /// timm's forward_head pooling of forward_features' tokens: post_layernorm of the class token
  /// [B, D] (= pooler_output).
  at::Tensor pool(const at::Tensor& features);
  /// timm's forward_intermediates (post_layernorm on each when `norm`).
  IntermediatesOutput forward_intermediates(const at::Tensor& pixel_values, const std::vector<int64_t>& indices,
                                            bool norm = false, bool stop_early = false,
                                            bool interpolate_pos_encoding = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  Blip2VisionOptions options;
  Blip2VisionEmbeddings embeddings{nullptr};
  nn::Encoder encoder{nullptr};
  nn::Norm post_layernorm{nullptr};
};
TORCH_MODULE(Blip2VisionModel);

}  // namespace tessera::models
