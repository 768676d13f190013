// CLIP vision tower (transformers' CLIPVisionEmbeddings + CLIPVisionTransformer).
#include "tessera/models/clip/clip_vision.h"

#include "tessera/models/clip/clip_layout.h"
#include "tessera/nn/pooling.h"
#include "tessera/nn/pos_embed_resize.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {

ClipVisionEmbeddingsImpl::ClipVisionEmbeddingsImpl(ClipVisionOptions options_)
    : Module("CLIPVisionEmbeddings"), options(std::move(options_)) {
  reset();
}

void ClipVisionEmbeddingsImpl::reset() {
  const int64_t D = options.hidden_size();
  class_embedding_ = add_parameter("class_embedding", at::empty({D}));
  patch_embedding = register_module(
      "patch_embedding", nn::PatchEmbed(nn::PatchEmbedOptions(options.num_channels(), D, options.patch_size())));
  position_embedding = register_module("position_embedding", nn::Embedding(options.num_patches() + 1, D));
}

at::Tensor ClipVisionEmbeddingsImpl::forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding) const {
  const int64_t B = pixel_values.size(0);
  at::Tensor patches = patch_embedding->forward(pixel_values);  // [B, N, D]
  at::Tensor cls = class_embedding().view({1, 1, -1}).expand({B, 1, -1});
  at::Tensor x = at::cat({cls.to(patches.scalar_type()), patches}, 1);  // [B, 1 + N, D]
  at::Tensor pos = position_embedding->weight();
  const int64_t p = options.patch_size();
  if (pixel_values.size(2) != options.image_size() || pixel_values.size(3) != options.image_size()) {
    TORCH_CHECK_VALUE(interpolate_pos_encoding, "pixel_values of ", pixel_values.size(2), "x", pixel_values.size(3),
                      " do not match the model's image_size ", options.image_size(),
                      " (pass interpolate_pos_encoding=True to resize the position embeddings)");
    // Hugging Face interpolates without antialiasing; keep that for parity.
    pos = nn::pos_embed_resize(pos, pixel_values.size(2) / p, pixel_values.size(3) / p, 0, 0, 1, /*antialias=*/false);
  }
  return x + pos.unsqueeze(0);
}

ClipVisionTransformerImpl::ClipVisionTransformerImpl(ClipVisionOptions options_)
    : Module("CLIPVisionTransformer"), options(std::move(options_)) {
  nn::build_then_init(*this);
}

void ClipVisionTransformerImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", ClipVisionEmbeddings(o));
  pre_layrnorm = register_module("pre_layrnorm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
  encoder = register_module("encoder", clip_encoder(o.hidden_size(), o.num_attention_heads(), o.intermediate_size(),
                                                    o.hidden_act(), o.layer_norm_eps(), o.attention_dropout(),
                                                    o.num_hidden_layers()));
  post_layernorm =
      register_module("post_layernorm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
}

void ClipVisionTransformerImpl::init_weights() {
  at::NoGradGuard g;
  const double f = options.initializer_factor();
  embeddings->class_embedding().normal_(0, std::pow(static_cast<double>(options.hidden_size()), -0.5) * f);
  embeddings->patch_embedding->weight().normal_(0, options.initializer_range() * f);
  embeddings->position_embedding->weight().normal_(0, options.initializer_range() * f);
  init_clip_encoder(*encoder, options.hidden_size(), f);
  pre_layrnorm->reset_parameters();
  post_layernorm->reset_parameters();
}

PooledOutput ClipVisionTransformerImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states,
                                                bool interpolate_pos_encoding) {
  at::Tensor h = pre_layrnorm->forward(embeddings->forward(pixel_values, interpolate_pos_encoding));
  nn::EncoderOutput enc = encoder->forward(h, {}, output_hidden_states);
  PooledOutput out;
  out.last_hidden_state = enc.last_hidden_state;
  out.pooler_output = post_layernorm->forward(enc.last_hidden_state.select(1, 0));
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

at::Tensor ClipVisionTransformerImpl::forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding) {
  return forward_intermediates(pixel_values, {}, false, false, interpolate_pos_encoding).last_hidden_state;
}

at::Tensor ClipVisionTransformerImpl::pool(const at::Tensor& features) {
  return nn::class_token(features, options.hidden_size(), "CLIP vision forward_head");
}

IntermediatesOutput ClipVisionTransformerImpl::forward_intermediates(const at::Tensor& pixel_values,
                                                                     const std::vector<int64_t>& indices, bool norm,
                                                                     bool stop_early, bool interpolate_pos_encoding) {
  at::Tensor h = pre_layrnorm->forward(embeddings->forward(pixel_values, interpolate_pos_encoding));
  auto [last, picked] = encoder->forward_intermediates(h, indices, {}, stop_early);
  IntermediatesOutput out;
  out.last_hidden_state = post_layernorm->forward(last);
  for (auto& t : picked) out.intermediates.push_back(norm ? post_layernorm->forward(t) : t);
  return out;
}

}  // namespace tessera::models
