// CLIP two-tower model (transformers' CLIPModel forward and init).
#include "tessera/models/clip/clip_model.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {

ClipModelImpl::ClipModelImpl(ClipOptions options_) : Module("CLIPModel"), options(std::move(options_)) {
  nn::build_then_init(*this);
}

void ClipModelImpl::reset() {
  text_model = register_module("text_model", ClipTextTransformer(options.text));
  vision_model = register_module("vision_model", ClipVisionTransformer(options.vision));
  visual_projection = register_module("visual_projection",
                                      nn::Linear(options.vision.hidden_size(), options.projection_dim(), false));
  text_projection =
      register_module("text_projection", nn::Linear(options.text.hidden_size(), options.projection_dim(), false));
  logit_scale_ = add_parameter("logit_scale", at::full({}, options.logit_scale_init_value()));
  if (options.has_logit_bias()) logit_bias_ = add_parameter("logit_bias", at::full({}, options.logit_bias_init_value()));
}

void ClipModelImpl::init_weights() {
  at::NoGradGuard g;
  const double f = options.initializer_factor();
  text_model->init_weights();
  vision_model->init_weights();
  visual_projection->weight().normal_(0, std::pow(static_cast<double>(options.vision.hidden_size()), -0.5) * f);
  text_projection->weight().normal_(0, std::pow(static_cast<double>(options.text.hidden_size()), -0.5) * f);
  logit_scale().fill_(options.logit_scale_init_value());
  if (options.has_logit_bias()) logit_bias().fill_(options.logit_bias_init_value());
}

// Every pair a binary decision, +1 on the diagonal, -1 off it,
// summed over images and averaged over texts.
at::Tensor siglip_pairwise_loss(const at::Tensor& logits_per_text) {
  at::Tensor signs = at::eye(logits_per_text.size(0), logits_per_text.options()) * 2 - 1;
  return -at::log_sigmoid(signs * logits_per_text).sum(-1).mean();
}

at::Tensor clip_contrastive_loss(const at::Tensor& logits_per_text) {
  at::Tensor labels = at::arange(logits_per_text.size(0), logits_per_text.options().dtype(at::kLong));
  at::Tensor caption = at::cross_entropy_loss(logits_per_text, labels);
  at::Tensor image = at::cross_entropy_loss(logits_per_text.t(), labels);
  return (caption + image) / 2.0;
}

namespace {
// x / ||x||_2 along the last axis, written as HF's _get_vector_norm (sum of squares, sqrt).
at::Tensor clip_unit_vector(const at::Tensor& x) { return x / x.pow(2).sum(-1, /*keepdim=*/true).sqrt(); }
}  // namespace

ClipOutput ClipModelImpl::forward(const at::Tensor& pixel_values, const at::Tensor& input_ids,
                                  const at::Tensor& attention_mask, bool return_loss, bool output_hidden_states,
                                  bool interpolate_pos_encoding) {
  ClipOutput out;
  TORCH_CHECK_VALUE(!return_loss || (pixel_values.size(0) > 0 && input_ids.size(0) > 0),
                    "return_loss needs a non-empty batch, got ", pixel_values.size(0), " images and ",
                    input_ids.size(0), " texts");
  out.vision_model_output = vision_model->forward(pixel_values, output_hidden_states, interpolate_pos_encoding);
  out.text_model_output = text_model->forward(input_ids, attention_mask, output_hidden_states);
  // transformers 5 reports the towers' pooler_output after projection (before normalising).
  out.vision_model_output.pooler_output = visual_projection->forward(out.vision_model_output.pooler_output);
  out.text_model_output.pooler_output = text_projection->forward(out.text_model_output.pooler_output);
  out.image_embeds = clip_unit_vector(out.vision_model_output.pooler_output);
  out.text_embeds = clip_unit_vector(out.text_model_output.pooler_output);
  out.logits_per_text = at::matmul(out.text_embeds, out.image_embeds.t()) * logit_scale().exp();
  if (options.has_logit_bias()) out.logits_per_text = out.logits_per_text + logit_bias();
  out.logits_per_image = out.logits_per_text.t();
  if (return_loss) {
    TORCH_CHECK_VALUE(input_ids.size(0) == pixel_values.size(0), "return_loss needs paired batches: ",
                      pixel_values.size(0), " images but ", input_ids.size(0), " texts");
    out.loss = options.has_logit_bias() ? siglip_pairwise_loss(out.logits_per_text)
                                        : clip_contrastive_loss(out.logits_per_text);
  }
  return out;
}

at::Tensor ClipModelImpl::get_image_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding) {
  return visual_projection->forward(vision_model->forward(pixel_values, false, interpolate_pos_encoding).pooler_output);
}

at::Tensor ClipModelImpl::get_text_features(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  return text_projection->forward(text_model->forward(input_ids, attention_mask).pooler_output);
}

void ClipModelImpl::set_gradient_checkpointing(bool on) {
  text_model->set_gradient_checkpointing(on);
  vision_model->set_gradient_checkpointing(on);
}

}  // namespace tessera::models
