// CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
// Supervision"); mirrors transformers' CLIPModel: text_model, vision_model, text_projection,
// visual_projection, logit_scale — so HF checkpoints load by key.
#pragma once
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/clip/clip_text.h"
#include "tessera/models/clip/clip_vision.h"
#include "tessera/nn/linear.h"

namespace tessera::models {

struct ClipOutput {
  static constexpr const char* kName = "CLIPOutput";
  at::Tensor loss;              ///< symmetric cross-entropy, when asked for
  at::Tensor logits_per_image;  ///< [B_img, B_txt] scaled cosine similarities
  at::Tensor logits_per_text;   ///< [B_txt, B_img]
  at::Tensor text_embeds;       ///< [B_txt, projection_dim], L2-normalised
  at::Tensor image_embeds;      ///< [B_img, projection_dim], L2-normalised
  PooledOutput text_model_output;    ///< pooler_output projected, as transformers 5 reports it
  PooledOutput vision_model_output;  ///< pooler_output projected, as transformers 5 reports it

  template <class V>
  void visit_fields(V&& v) const {
    v("loss", loss);
    v("logits_per_image", logits_per_image);
    v("logits_per_text", logits_per_text);
    v("text_embeds", text_embeds);
    v("image_embeds", image_embeds);
    v("text_model_output", text_model_output);
    v("vision_model_output", vision_model_output);
  }
};

/// Example:
///   ClipModel clip(ClipOptions::from_file("ckpt/config.json"));
///   core::load_pretrained_weights(*clip, "ckpt");
///   auto out = clip->forward(pixels, ids, mask, /*return_loss=*/false);
class ClipModelImpl : public nn::Module<ClipModelImpl> {
 public:
  explicit ClipModelImpl(ClipOptions options = {});
  void reset() override;
  /// transformers' CLIPPreTrainedModel._init_weights, once.
  void init_weights();
  ClipOutput forward(const at::Tensor& pixel_values, const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                     bool return_loss = false, bool output_hidden_states = false,
                     bool interpolate_pos_encoding = false);
  /// Projected, unnormalised image features [B, projection_dim].
  at::Tensor get_image_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  /// Projected, unnormalised text features [B, projection_dim].
  at::Tensor get_text_features(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  void set_gradient_checkpointing(bool on);

  ClipOptions options;
  const at::Tensor& logit_scale() const { return param(logit_scale_); }
  /// SigLIP's learned bias (a scalar), or undefined without `logit_bias_init_value`.
  at::Tensor logit_bias() const { return options.has_logit_bias() ? param(logit_bias_) : at::Tensor(); }
  ClipTextTransformer text_model{nullptr};
  ClipVisionTransformer vision_model{nullptr};
  nn::Linear visual_projection{nullptr}, text_projection{nullptr};

 private:
  nn::Slot logit_scale_, logit_bias_;
};
TORCH_MODULE(ClipModel);

/// (CE(logits_per_text, diag) + CE(logits_per_text^T, diag)) / 2, as transformers' clip_loss.
at::Tensor clip_contrastive_loss(const at::Tensor& logits_per_text);
/// transformers' SiglipModel loss over [texts, images] logits (the pairs on the diagonal).
at::Tensor siglip_pairwise_loss(const at::Tensor& logits_per_text);

}  // namespace tessera::models
