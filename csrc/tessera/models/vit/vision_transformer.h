// Pre-LN vision transformer with a class token (Radford et al. 2021, CLIP's image tower;
// transformers' CLIPVisionTransformer): embeddings -> pre_layrnorm -> encoder -> post_layernorm
// on the class token. Parameter names are Hugging Face's (including its `pre_layrnorm` spelling).
#pragma once
#include "tessera/models/outputs.h"
#include "tessera/models/vit/vision_options.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/patch_embed.h"

#include <torch/nn/modules/embedding.h>

namespace tessera::models {

/// `embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}`
class VisionEmbeddingsImpl : public torch::nn::Cloneable<VisionEmbeddingsImpl> {
 public:
  explicit VisionEmbeddingsImpl(VisionTransformerOptions options);
  void reset() override;
  /// [B, C, H, W] -> [B, 1 + patches, D]. Other resolutions than image_size need
  /// `interpolate_pos_encoding` (bicubic resize of the position grid).
  at::Tensor forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  VisionTransformerOptions options;
  at::Tensor class_embedding;
  nn::PatchEmbed patch_embedding{nullptr};
  torch::nn::Embedding position_embedding{nullptr};
};
TORCH_MODULE(VisionEmbeddings);

/// last_hidden_state: encoder output [B, 1 + patches, D] (no final norm);
/// pooler_output: post_layernorm(class token) [B, D].
using VisionOutput = PooledOutput;

/// Example: `VisionTransformer vit(VisionTransformerOptions().patch_size(16)); auto out = vit(x);`
class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl> {
 public:
  explicit VisionTransformerImpl(VisionTransformerOptions options = {});
  void reset() override;
  /// Initialisation of transformers' CLIPPreTrainedModel._init_weights.
  void init_weights();
  VisionOutput forward(const at::Tensor& pixel_values, bool output_hidden_states = false,
                       bool interpolate_pos_encoding = false);
  /// Hidden states after pre_layrnorm and each block: element i is the input of block i.
  /// (timm's forward_intermediates; LLaVA takes element -2.)
  std::vector<at::Tensor> forward_intermediates(const at::Tensor& pixel_values);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  VisionTransformerOptions options;
  VisionEmbeddings embeddings{nullptr};
  torch::nn::LayerNorm pre_layrnorm{nullptr}, post_layernorm{nullptr};
  nn::Encoder encoder{nullptr};
};
TORCH_MODULE(VisionTransformer);

/// Shared by both CLIP towers: the transformer block options for these sizes.
nn::TransformerBlockOptions block_options(int64_t dim, int64_t heads, int64_t mlp, const std::string& act,
                                          double eps, double attention_dropout);
/// HF's init for an encoder stack of width `dim` (q/k/v/out and fc1/fc2 stds depend on depth).
void init_encoder(nn::EncoderImpl& encoder, int64_t dim, double factor);

}  // namespace tessera::models
