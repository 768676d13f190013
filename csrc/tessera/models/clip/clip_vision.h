// CLIP's image tower (Radford et al. 2021; transformers' CLIPVisionEmbeddings +
// CLIPVisionTransformer): patch + class embeddings -> pre_layrnorm -> encoder -> post_layernorm
// on the class token. Parameter names are Hugging Face's (including its `pre_layrnorm` spelling).
#pragma once
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/embedding.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/patch_embed.h"

namespace tessera::models {

/// `embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}`
class ClipVisionEmbeddingsImpl : public nn::Module<ClipVisionEmbeddingsImpl> {
 public:
  explicit ClipVisionEmbeddingsImpl(ClipVisionOptions options);
  void reset() override;
  /// [B, C, H, W] -> [B, 1 + patches, D]. Other resolutions than image_size need
  /// `interpolate_pos_encoding` (bicubic resize of the position grid).
  at::Tensor forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false) const;
  const at::Tensor& class_embedding() const { return param(class_embedding_); }
  ClipVisionOptions options;
  nn::PatchEmbed patch_embedding{nullptr};
  nn::Embedding position_embedding{nullptr};

 private:
  nn::Slot class_embedding_;
};
TORCH_MODULE(ClipVisionEmbeddings);

/// Example: `ClipVisionTransformer vit(ClipVisionOptions().patch_size(16)); auto out = vit->forward(x);`
class ClipVisionTransformerImpl : public nn::Module<ClipVisionTransformerImpl> {
 public:
  explicit ClipVisionTransformerImpl(ClipVisionOptions options = {});
  void reset() override;
  /// transformers' CLIPPreTrainedModel._init_weights, once.
  void init_weights();
  /// last_hidden_state: encoder output [B, 1 + patches, D] (no final norm);
  /// pooler_output: post_layernorm(class token) [B, D].
  PooledOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = false,
                       bool interpolate_pos_encoding = false);
  /// timm's forward_features: post_layernorm over every token [B, 1 + patches, D] (timm's CLIP
  /// ViTs map post_layernorm to `norm`; transformers' last_hidden_state is the unnormed tokens).
  at::Tensor forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  /// timm's forward_head pooling of forward_features' tokens: the class token [B, D] (= pooler_output).
  at::Tensor pool(const at::Tensor& features);
  /// timm's forward_intermediates: outputs of the layers in `indices` (negative from the end;
  /// -2 equals transformers' hidden_states[-2]), with post_layernorm applied when `norm`, running
  /// no layer past the last index when `stop_early`. last_hidden_state: post_layernorm of the last
  /// layer run (forward_features without stop_early).
  IntermediatesOutput forward_intermediates(const at::Tensor& pixel_values, const std::vector<int64_t>& indices,
                                            bool norm = false, bool stop_early = false,
                                            bool interpolate_pos_encoding = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  ClipVisionOptions options;
  ClipVisionEmbeddings embeddings{nullptr};
  nn::Norm pre_layrnorm{nullptr}, post_layernorm{nullptr};
  nn::Encoder encoder{nullptr};
};
TORCH_MODULE(ClipVisionTransformer);

}  // namespace tessera::models
