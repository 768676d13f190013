// CLIP-style vision transformer (transformers' CLIPVisionEmbeddings + CLIPVisionTransformer).
#include "tessera/models/vit/vision_transformer.h"

#include "tessera/nn/pos_embed_resize.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {

nn::TransformerBlockOptions block_options(int64_t dim, int64_t heads, int64_t mlp, const std::string& act, double eps,
                                          double attention_dropout) {
  return nn::TransformerBlockOptions(dim, heads, mlp)
      .act(nn::activation_from_name(act))
      .layer_norm_eps(eps)
      .attention_dropout(attention_dropout);
}

void init_encoder(nn::EncoderImpl& encoder, int64_t dim, double factor) {
  at::NoGradGuard g;
  const double d = static_cast<double>(dim);
  const double in_std = std::pow(d, -0.5) * std::pow(2.0 * encoder.num_layers, -0.5) * factor;
  const double out_std = std::pow(d, -0.5) * factor;
  const double fc_std = std::pow(2.0 * d, -0.5) * factor;
  for (const auto& m : *encoder.layers) {
    auto* b = m->as<nn::TransformerBlockImpl>();
    for (auto* lin : {&b->self_attn->q_proj, &b->self_attn->k_proj, &b->self_attn->v_proj})
      (*lin)->weight.normal_(0, in_std);
    b->self_attn->out_proj->weight.normal_(0, out_std);
    b->mlp->fc1->weight.normal_(0, fc_std);
    b->mlp->fc2->weight.normal_(0, in_std);
    for (const auto& p : b->named_parameters()) {
      if (p.key().find("bias") != std::string::npos) p.value().zero_();
      if (p.key().find("layer_norm") != std::string::npos && p.key().find("weight") != std::string::npos) p.value().fill_(1.0);
    }
  }
}

VisionEmbeddingsImpl::VisionEmbeddingsImpl(VisionTransformerOptions options_) : options(std::move(options_)) { reset(); }

void VisionEmbeddingsImpl::reset() {
  const int64_t D = options.hidden_size();
  class_embedding = register_parameter("class_embedding", at::randn({D}));
  patch_embedding = register_module(
      "patch_embedding", nn::PatchEmbed(nn::PatchEmbedOptions(options.num_channels(), D, options.patch_size())));
  position_embedding = register_module("position_embedding", torch::nn::Embedding(options.num_patches() + 1, D));
}

at::Tensor VisionEmbeddingsImpl::forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding) {
  const int64_t B = pixel_values.size(0);
  at::Tensor patches = patch_embedding(pixel_values);  // [B, N, D]
  at::Tensor cls = class_embedding.view({1, 1, -1}).expand({B, 1, -1});
  at::Tensor x = at::cat({cls, patches}, 1);  // [B, 1 + N, D]
  at::Tensor pos = position_embedding->weight;
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

VisionTransformerImpl::VisionTransformerImpl(VisionTransformerOptions options_) : options(std::move(options_)) {
  reset();
}

void VisionTransformerImpl::reset() {
  const auto& o = options;
  using torch::nn::LayerNormOptions;
  embeddings = register_module("embeddings", VisionEmbeddings(o));
  pre_layrnorm = register_module("pre_layrnorm", torch::nn::LayerNorm(LayerNormOptions({o.hidden_size()}).eps(o.layer_norm_eps())));
  encoder = register_module(
      "encoder", nn::Encoder(block_options(o.hidden_size(), o.num_attention_heads(), o.intermediate_size(), o.hidden_act(),
                                           o.layer_norm_eps(), o.attention_dropout()),
                             o.num_hidden_layers()));
  post_layernorm = register_module("post_layernorm", torch::nn::LayerNorm(LayerNormOptions({o.hidden_size()}).eps(o.layer_norm_eps())));
  init_weights();
}

void VisionTransformerImpl::init_weights() {
  at::NoGradGuard g;
  const double f = options.initializer_factor();
  embeddings->class_embedding.normal_(0, std::pow(static_cast<double>(options.hidden_size()), -0.5) * f);
  embeddings->patch_embedding->weight.normal_(0, options.initializer_range() * f);
  embeddings->position_embedding->weight.normal_(0, options.initializer_range() * f);
  init_encoder(*encoder, options.hidden_size(), f);
  for (auto* ln : {&pre_layrnorm, &post_layernorm}) {
    (*ln)->weight.fill_(1.0);
    (*ln)->bias.zero_();
  }
}

VisionOutput VisionTransformerImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states,
                                            bool interpolate_pos_encoding) {
  at::Tensor h = pre_layrnorm(embeddings(pixel_values, interpolate_pos_encoding));
  nn::EncoderOutput enc = encoder->forward(h, {}, output_hidden_states);
  VisionOutput out;
  out.last_hidden_state = enc.last_hidden_state;
  out.pooler_output = post_layernorm(enc.last_hidden_state.select(1, 0));
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

std::vector<at::Tensor> VisionTransformerImpl::forward_intermediates(const at::Tensor& pixel_values) {
  return forward(pixel_values, /*output_hidden_states=*/true).hidden_states;
}

}  // namespace tessera::models
