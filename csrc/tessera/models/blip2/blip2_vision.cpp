// BLIP-2 vision tower (transformers' Blip2VisionEmbeddings, Blip2Attention, Blip2EncoderLayer,
// Blip2VisionModel).
#include "tessera/models/blip2/blip2_vision.h"

#include "tessera/models/vit/vit_layout.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/init.h"
#include "tessera/nn/pooling.h"
#include "tessera/nn/pos_embed_resize.h"

#include <ATen/ATen.h>

namespace tessera::models {

Blip2VisionEmbeddingsImpl::Blip2VisionEmbeddingsImpl(Blip2VisionOptions options_)
    : Module("Blip2VisionEmbeddings"), options(std::move(options_)) {
  reset();
}

void Blip2VisionEmbeddingsImpl::reset() {
  const int64_t D = options.hidden_size();
  class_embedding_ = add_parameter("class_embedding", std::vector<int64_t>{1, 1, D});
  patch_embedding = register_module(
      "patch_embedding", nn::PatchEmbed(nn::PatchEmbedOptions(3, D, options.patch_size()).bias(true)));
  position_embedding_ = add_parameter("position_embedding", std::vector<int64_t>{1, options.num_patches() + 1, D});
}

at::Tensor Blip2VisionEmbeddingsImpl::forward(const at::Tensor& pixel_values, bool interpolate_pos_encoding) const {
  check_pixel_values(pixel_values, 3, options.patch_size());
  const int64_t B = pixel_values.size(0), p = options.patch_size();
  at::Tensor patches = patch_embedding->forward(pixel_values);  // [B, N, D]
  at::Tensor x = at::cat({class_embedding().expand({B, 1, -1}).to(patches.scalar_type()), patches}, 1);
  at::Tensor pos = position_embedding();
  if (pixel_values.size(2) != options.image_size() || pixel_values.size(3) != options.image_size()) {
    TORCH_CHECK_VALUE(interpolate_pos_encoding, "pixel_values of ", pixel_values.size(2), "x", pixel_values.size(3),
                      " do not match the model's image_size ", options.image_size(),
                      " (resize the images; Blip2VisionModel and Blip2ForConditionalGeneration also take "
                      "interpolate_pos_encoding=True, which resizes the position embeddings, as transformers' do)");
    // transformers resizes bicubically without antialiasing.
    pos = nn::pos_embed_resize(pos.squeeze(0), pixel_values.size(2) / p, pixel_values.size(3) / p, 0, 0, 1,
                               /*antialias=*/false)
              .unsqueeze(0);
  }
  return x + pos.to(x.scalar_type());
}

Blip2AttentionImpl::Blip2AttentionImpl(int64_t dim_, int64_t heads_, bool qkv_bias_, double dropout_)
    : Module("Blip2Attention"), dim(dim_), heads(heads_), qkv_bias(qkv_bias_), dropout(dropout_) {
  reset();
}

void Blip2AttentionImpl::reset() {
  qkv = register_module("qkv", nn::Linear(dim, 3 * dim, qkv_bias));
  projection = register_module("projection", nn::Linear(dim, dim));
}

at::Tensor Blip2AttentionImpl::forward(const at::Tensor& x) const {
  const int64_t B = x.size(0), L = x.size(1);
  // [B, L, 3, H, hd] -> [3, B, H, L, hd]
  at::Tensor t = qkv->forward(x).reshape({B, L, 3, heads, dim / heads}).permute({2, 0, 3, 1, 4});
  at::Tensor out = nn::attention(t[0], t[1], t[2], {}, false, is_training() ? dropout : 0.0);
  return projection->forward(out.transpose(1, 2).reshape({B, L, dim}));
}

Blip2EncoderLayerImpl::Blip2EncoderLayerImpl(Blip2VisionOptions options_)
    : Module("Blip2EncoderLayer"), options(std::move(options_)), act(nn::activation_from_name(options.hidden_act())) {
  reset();
}

void Blip2EncoderLayerImpl::reset() {
  const auto& o = options;
  const int64_t D = o.hidden_size();
  self_attn = register_module("self_attn", Blip2Attention(D, o.num_attention_heads(), o.qkv_bias(),
                                                           o.attention_dropout()));
  layer_norm1 = register_module("layer_norm1", nn::Norm(D, nn::NormKind::layer_norm, o.layer_norm_eps()));
  const std::vector<std::pair<std::string, std::string>> mlp{{"mlp", "Blip2MLP"}};
  fc1 = nn::Linear(std::dynamic_pointer_cast<nn::LinearImpl>(
      nn::register_at(*this, "mlp.fc1", nn::Linear(D, o.intermediate_size()).ptr(), mlp)));
  fc2 = nn::Linear(std::dynamic_pointer_cast<nn::LinearImpl>(
      nn::register_at(*this, "mlp.fc2", nn::Linear(o.intermediate_size(), D).ptr(), mlp)));
  layer_norm2 = register_module("layer_norm2", nn::Norm(D, nn::NormKind::layer_norm, o.layer_norm_eps()));
}

at::Tensor Blip2EncoderLayerImpl::forward(const at::Tensor& x) const {
  at::Tensor h = x + self_attn->forward(layer_norm1->forward(x));
  return h + fc2->forward(nn::apply_activation(fc1->forward(layer_norm2->forward(h)), act));
}

Blip2VisionModelImpl::Blip2VisionModelImpl(Blip2VisionOptions options_)
    : Module("Blip2VisionModel"), options(std::move(options_)) {
  options.validate("vision_config");
  nn::build_then_init(*this);
}

void Blip2VisionModelImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", Blip2VisionEmbeddings(o));
  encoder = register_module(
      "encoder", nn::Encoder(
                     o.num_hidden_layers(), [o](int64_t) { return Blip2EncoderLayer(o).ptr(); }, "layers",
                     "Blip2Encoder"));
  post_layernorm =
      register_module("post_layernorm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
}

void Blip2VisionModelImpl::init_weights() {
  // transformers: normal(initializer_range) linears and conv, zero biases, unit norms; class and
  // position embeddings from trunc_normal_(std) whose bounds are +-2 absolute, far beyond std: a
  // plain normal draw. The key third of the fused qkv bias starts at zero with the rest.
  at::NoGradGuard g;
  const double std = options.initializer_range();
  nn::init_linears_and_norms(*this, std);
  embeddings->patch_embedding->weight().normal_(0, std);
  if (embeddings->patch_embedding->bias().defined()) embeddings->patch_embedding->bias().zero_();
  embeddings->class_embedding().normal_(0, std);
  embeddings->position_embedding().normal_(0, std);
}

PooledOutput Blip2VisionModelImpl::forward(const at::Tensor& pixel_values, bool output_hidden_states,
                                           bool interpolate_pos_encoding) {
  nn::EncoderOutput enc =
      encoder->forward(embeddings->forward(pixel_values, interpolate_pos_encoding), {}, output_hidden_states);
  PooledOutput out;
  out.last_hidden_state = post_layernorm->forward(enc.last_hidden_state);
  out.pooler_output = pool(out.last_hidden_state);
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

at::Tensor Blip2VisionModelImpl::forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding) {
  return forward(pixel_values, false, interpolate_pos_encoding).last_hidden_state;
}

at::Tensor Blip2VisionModelImpl::pool(const at::Tensor& features) {
  return post_layernorm->forward(nn::class_token(features, options.hidden_size(), "BLIP-2 vision forward_head"));
}

IntermediatesOutput Blip2VisionModelImpl::forward_intermediates(const at::Tensor& pixel_values,
                                                                const std::vector<int64_t>& indices, bool norm,
                                                                bool stop_early, bool interpolate_pos_encoding) {
  at::Tensor h = embeddings->forward(pixel_values, interpolate_pos_encoding);
  auto [last, picked] = encoder->forward_intermediates(h, indices, {}, stop_early);
  IntermediatesOutput out;
  out.last_hidden_state = post_layernorm->forward(last);
  for (auto& t : picked) out.intermediates.push_back(norm ? post_layernorm->forward(t) : t);
  return out;
}

}  // namespace tessera::models
