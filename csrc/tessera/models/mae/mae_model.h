// MAE (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners") with the names and
// outputs of transformers' ViTMAEModel / ViTMAEForPreTraining: per-sample random masking (driven
// by `noise` when given), the encoder on the visible patches only, a light decoder that fills in
// mask tokens, fixed 2-D sin-cos position embeddings, and a pixel loss on masked patches.
// Checkpoint tree: `vit.encoder.layer.N` (ViT layout) and `decoder.decoder_encoder.layer.N` (what
// transformers 5 writes); the original `decoder.decoder_layers.N` loads through a key alias.
#pragma once
#include "tessera/models/mae/mae_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/patch_embed.h"

#include <vector>

namespace tessera::models {

/// transformers' ViTMAEModelOutput.
struct MaeModelOutput {
  static constexpr const char* kName = "ViTMAEModelOutput";
  at::Tensor last_hidden_state;  ///< [B, 1 + kept, D], after the final layernorm
  at::Tensor mask;               ///< [B, N] float: 1 = masked, 0 = visible
  at::Tensor ids_restore;        ///< [B, N] int64: unshuffles kept + mask tokens
  std::vector<at::Tensor> hidden_states;

  template <class V>
  void visit_fields(V&& v) const {
    v("last_hidden_state", last_hidden_state);
    v("mask", mask);
    v("ids_restore", ids_restore);
    v("hidden_states", hidden_states);
  }
};

/// transformers' ViTMAEForPreTrainingOutput.
struct MaePreTrainingOutput {
  static constexpr const char* kName = "ViTMAEForPreTrainingOutput";
  at::Tensor loss;    ///< [] mean squared error over masked patches
  at::Tensor logits;  ///< [B, N, patch_size^2 * C] predicted (normalised, with norm_pix_loss) pixels
  at::Tensor mask;
  at::Tensor ids_restore;
  std::vector<at::Tensor> hidden_states;

  template <class V>
  void visit_fields(V&& v) const {
    v("loss", loss);
    v("logits", logits);
    v("mask", mask);
    v("ids_restore", ids_restore);
    v("hidden_states", hidden_states);
  }
};

/// [1 + grid^2, dim]: a zero row for the class token, then MAE's 2-D sin-cos table laid out as the
/// released checkpoints have it, [sin(col) | cos(col) | sin(row) | cos(row)].
at::Tensor mae_sincos_pos_embed(int64_t dim, int64_t grid);

struct MaskedTokens {
  at::Tensor kept;         ///< [B, keep, D]
  at::Tensor mask;         ///< [B, N]
  at::Tensor ids_restore;  ///< [B, N]
};
/// Keeps int(N * (1 - ratio)) tokens per sample, those with the smallest `noise` ([B, N]; uniform
/// random when undefined).
MaskedTokens random_masking(const at::Tensor& x, at::Tensor noise, double mask_ratio);

/// `cls_token`, `patch_embeddings.projection.{weight,bias}`, `position_embeddings` (frozen).
class MaeEmbeddingsImpl : public nn::Module<MaeEmbeddingsImpl> {
 public:
  explicit MaeEmbeddingsImpl(MaeOptions options);
  void reset() override;
  /// [B, C, H, W] -> masked tokens with the class token first.
  MaskedTokens forward(const at::Tensor& pixel_values, const at::Tensor& noise, bool interpolate_pos_encoding) const;
  /// [B, C, H, W] -> [B, 1 + N, D]: the class token and every patch in order, no masking.
  at::Tensor forward_unmasked(const at::Tensor& pixel_values, bool interpolate_pos_encoding) const;
  const at::Tensor& cls_token() const { return param(cls_token_); }
  const at::Tensor& position_embeddings() const { return param(position_embeddings_); }
  MaeOptions options;
  nn::PatchEmbed projection{nullptr};

 private:
  /// Patches with their position embeddings [B, N, D] and the class token with its own [B, 1, D].
  std::pair<at::Tensor, at::Tensor> patches_and_cls(const at::Tensor& pixel_values, bool interpolate_pos_encoding) const;
  nn::Slot cls_token_, position_embeddings_;
};
TORCH_MODULE(MaeEmbeddings);

/// ViTMAEModel: embeddings (with masking) -> encoder -> layernorm.
class MaeModelImpl : public nn::Module<MaeModelImpl> {
 public:
  explicit MaeModelImpl(MaeOptions options = {});
  void reset() override;
  void init_weights();
  MaeModelOutput forward(const at::Tensor& pixel_values, const at::Tensor& noise = {},
                         bool output_hidden_states = false, bool interpolate_pos_encoding = false);
  /// timm's forward_features: layernorm over the class token and *every* patch [B, 1 + N, D]
  /// (no masking, as timm's MAE-pretrained ViTs; transformers' ViTMAEModel with mask_ratio 0
  /// keeps every patch too, but in the order of its noise).
  at::Tensor forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  /// timm's forward_head pooling of forward_features' tokens: the class token [B, D] (timm's MAE
  /// ViTs pool with global_pool='token'; transformers' ViTMAEModel has no pooler).
  at::Tensor pool(const at::Tensor& features);
  /// timm's forward_intermediates over every patch (no masking): the outputs of the layers in
  /// `indices` (negative from the end), layernormed when `norm`, running no layer past the last
  /// index when `stop_early`; last_hidden_state is the layernormed output of the last layer run.
  IntermediatesOutput forward_intermediates(const at::Tensor& pixel_values, const std::vector<int64_t>& indices,
                                            bool norm = false, bool stop_early = false,
                                            bool interpolate_pos_encoding = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }
  MaeOptions options;
  MaeEmbeddings embeddings{nullptr};
  nn::Encoder encoder{nullptr};
  nn::Norm layernorm{nullptr};
};
TORCH_MODULE(MaeModel);

/// ViTMAEDecoder: embed -> mask tokens + unshuffle -> position -> layers -> norm -> pixels.
class MaeDecoderImpl : public nn::Module<MaeDecoderImpl> {
 public:
  explicit MaeDecoderImpl(MaeOptions options);
  void reset() override;
  /// latent [B, 1 + kept, D], ids_restore [B, N] -> logits [B, N, p*p*C].
  at::Tensor forward(const at::Tensor& latent, const at::Tensor& ids_restore, bool interpolate_pos_encoding);
  const at::Tensor& mask_token() const { return param(mask_token_); }
  const at::Tensor& decoder_pos_embed() const { return param(decoder_pos_embed_); }
  MaeOptions options;
  nn::Linear decoder_embed{nullptr}, decoder_pred{nullptr};
  nn::Encoder decoder_encoder{nullptr};
  nn::Norm decoder_norm{nullptr};

 private:
  nn::Slot mask_token_, decoder_pos_embed_;
};
TORCH_MODULE(MaeDecoder);

/// ViTMAEForPreTraining. Example:
///   MaeForPreTraining mae(MaeOptions().norm_pix_loss(true));
///   auto out = mae->forward(images);   // out.loss, out.logits, out.mask
class MaeForPreTrainingImpl : public nn::Module<MaeForPreTrainingImpl> {
 public:
  explicit MaeForPreTrainingImpl(MaeOptions options = {});
  void reset() override;
  /// transformers' ViTMAE init: normal(initializer_range) linears, xavier patch projection,
  /// sin-cos position tables, normal class and mask tokens.
  void init_weights();
  MaePreTrainingOutput forward(const at::Tensor& pixel_values, const at::Tensor& noise = {},
                               bool output_hidden_states = false, bool interpolate_pos_encoding = false);
  /// [B, C, H, W] -> [B, N, p*p*C] (row-major patches, channels last inside a patch).
  at::Tensor patchify(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false) const;
  /// The inverse of patchify for an image of `height` x `width` (0: the configured size).
  at::Tensor unpatchify(const at::Tensor& patches, int64_t height = 0, int64_t width = 0) const;
  void set_gradient_checkpointing(bool on) {
    vit->encoder->gradient_checkpointing = on;
    decoder->decoder_encoder->gradient_checkpointing = on;
  }
  MaeOptions options;
  MaeModel vit{nullptr};
  MaeDecoder decoder{nullptr};
};
TORCH_MODULE(MaeForPreTraining);

}  // namespace tessera::models
