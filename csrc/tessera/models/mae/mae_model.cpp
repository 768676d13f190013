// MAE encoder with masking, decoder and pixel loss (transformers' modeling_vit_mae.py).
#include "tessera/models/mae/mae_model.h"

#include "tessera/models/vit/vit_layout.h"
#include "tessera/nn/activation.h"
#include "tessera/nn/pooling.h"
#include "tessera/nn/pos_embed_resize.h"
#include "tessera/nn/transformer_block.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {
namespace {

nn::TransformerBlockOptions block_options(const MaeOptions& o, int64_t dim, int64_t heads, int64_t mlp) {
  return nn::TransformerBlockOptions(dim, heads, mlp)
      .act(nn::activation_from_name(o.hidden_act()))
      .norm_eps(o.layer_norm_eps())
      .attention_dropout(o.attention_probs_dropout_prob())
      .hidden_dropout(o.hidden_dropout_prob())
      .q_bias(o.qkv_bias())
      .k_bias(o.qkv_bias())
      .v_bias(o.qkv_bias());
}

void check_pixels(const MaeOptions& o, const at::Tensor& px, bool interpolate) {
  check_pixel_values(px, o.num_channels(), o.patch_size());
  TORCH_CHECK_VALUE(interpolate || (px.size(2) == o.image_size() && px.size(3) == o.image_size()),
                    "pixel_values of ", px.size(2), "x", px.size(3), " do not match the model's image_size ",
                    o.image_size(), " (pass interpolate_pos_encoding=True to resize the position embeddings)");
}

// Linear layers of a ViT stack: normal(std) weights, zero biases; norms to ones/zeros.
void init_vit_stack(nn::EncoderImpl& stack, double std) {
  for (const auto& m : *stack.layers) {
    auto* b = m->as<nn::TransformerBlockImpl>();
    const auto& attn = *b->self_attn;
    for (const nn::LinearImpl* lin : std::initializer_list<const nn::LinearImpl*>{
             attn.q_proj.get(), attn.k_proj.get(), attn.v_proj.get(), attn.o_proj.get(), b->fc1.get(), b->fc2.get()}) {
      lin->weight().normal_(0, std);
      if (lin->bias().defined()) lin->bias().zero_();
    }
    b->attn_norm->reset_parameters();
    b->mlp_norm->reset_parameters();
  }
}

}  // namespace

at::Tensor mae_sincos_pos_embed(int64_t dim, int64_t grid) {
  const int64_t quarter = dim / 4;
  auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor omega = 1.0 / at::pow(10000.0, at::arange(quarter, f64) / static_cast<double>(quarter));
  at::Tensor coords = at::arange(grid, f64);
  at::Tensor rows = coords.repeat_interleave(grid);  // row index of each patch (row-major)
  at::Tensor cols = coords.repeat({grid});           // column index
  at::Tensor er = at::outer(rows, omega), ec = at::outer(cols, omega);
  at::Tensor table = at::cat({ec.sin(), ec.cos(), er.sin(), er.cos()}, 1);
  return at::cat({at::zeros({1, dim}, f64), table}, 0).to(at::kFloat);
}

MaskedTokens random_masking(const at::Tensor& x, at::Tensor noise, double mask_ratio) {
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2);
  const auto keep = static_cast<int64_t>(static_cast<double>(N) * (1.0 - mask_ratio));
  if (!noise.defined()) {
    noise = at::rand({B, N}, x.options().dtype(at::kFloat));
  } else {
    TORCH_CHECK_VALUE(noise.dim() == 2 && noise.size(0) == B && noise.size(1) == N, "noise must be [", B, ", ", N,
                      "] (batch, patches), got ", noise.sizes());
    TORCH_CHECK_VALUE(at::isFloatingType(noise.scalar_type()), "noise must be a floating tensor, got ",
                      noise.scalar_type());
  }
  at::Tensor ids_shuffle = at::argsort(noise.to(x.device()), int64_t{1}, false);
  at::Tensor ids_restore = at::argsort(ids_shuffle, int64_t{1}, false);
  at::Tensor ids_keep = ids_shuffle.slice(1, 0, keep);
  MaskedTokens out;
  out.kept = at::gather(x, 1, ids_keep.unsqueeze(-1).expand({B, keep, D}));
  at::Tensor mask = at::ones({B, N}, x.options().dtype(at::kFloat));
  mask.slice(1, 0, keep).zero_();
  out.mask = at::gather(mask, 1, ids_restore);
  out.ids_restore = ids_restore;
  return out;
}

// ---- embeddings ---------------------------------------------------------------------------------
MaeEmbeddingsImpl::MaeEmbeddingsImpl(MaeOptions options_) : Module("ViTMAEEmbeddings"), options(std::move(options_)) {
  reset();
}

void MaeEmbeddingsImpl::reset() {
  const int64_t D = options.hidden_size();
  cls_token_ = add_parameter("cls_token", at::zeros({1, 1, D}));
  projection = nn::PatchEmbed(std::dynamic_pointer_cast<nn::PatchEmbedImpl>(nn::register_at(
      *this, "patch_embeddings.projection",
      nn::PatchEmbed(nn::PatchEmbedOptions(options.num_channels(), D, options.patch_size()).bias(true)).ptr(),
      {{"patch_embeddings", "ViTMAEPatchEmbeddings"}})));
  // Fixed sin-cos table: a parameter without gradient, as in transformers (so checkpoints hold it).
  position_embeddings_ = add_parameter(
      "position_embeddings", mae_sincos_pos_embed(D, options.grid()).unsqueeze(0), /*requires_grad=*/false);
}

std::pair<at::Tensor, at::Tensor> MaeEmbeddingsImpl::patches_and_cls(const at::Tensor& pixel_values,
                                                                     bool interpolate_pos_encoding) const {
  at::Tensor x = projection->forward(pixel_values);  // [B, N, D]
  at::Tensor pos = position_embeddings();
  const int64_t gh = pixel_values.size(2) / options.patch_size(), gw = pixel_values.size(3) / options.patch_size();
  if (interpolate_pos_encoding && (gh * gw != options.num_patches() || gh != gw)) {
    pos = nn::pos_embed_resize(pos, gh, gw, options.grid(), options.grid(), 1, /*antialias=*/false);
  }
  at::Tensor patches = x + pos.slice(1, 1);
  at::Tensor cls = (cls_token() + pos.slice(1, 0, 1)).expand({x.size(0), 1, -1});
  return {patches, cls.to(patches.scalar_type())};
}

MaskedTokens MaeEmbeddingsImpl::forward(const at::Tensor& pixel_values, const at::Tensor& noise,
                                        bool interpolate_pos_encoding) const {
  auto [patches, cls] = patches_and_cls(pixel_values, interpolate_pos_encoding);
  MaskedTokens m = random_masking(patches, noise, options.mask_ratio());
  m.kept = at::cat({cls, m.kept}, 1);
  return m;
}

at::Tensor MaeEmbeddingsImpl::forward_unmasked(const at::Tensor& pixel_values, bool interpolate_pos_encoding) const {
  auto [patches, cls] = patches_and_cls(pixel_values, interpolate_pos_encoding);
  return at::cat({cls, patches}, 1);
}

// ---- encoder ------------------------------------------------------------------------------------
MaeModelImpl::MaeModelImpl(MaeOptions options_) : Module("ViTMAEModel"), options(std::move(options_)) {
  options.validate("vit_mae config");
  nn::build_then_init(*this);
}

void MaeModelImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", MaeEmbeddings(o));
  encoder = register_module(
      "encoder", vit_encoder(block_options(o, o.hidden_size(), o.num_attention_heads(), o.intermediate_size()),
                             o.num_hidden_layers(), "ViTMAE"));
  layernorm = register_module("layernorm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
}

void MaeModelImpl::init_weights() {
  at::NoGradGuard g;
  init_vit_stack(*encoder, options.initializer_range());
  layernorm->reset_parameters();
  auto w = embeddings->projection->weight();
  // Like a linear layer over the flattened patch (MAE's choice), not a conv's default.
  const int64_t fan_out = w.size(0), fan_in = w.numel() / w.size(0);
  const double bound = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  w.uniform_(-bound, bound);
  embeddings->projection->bias().zero_();
  embeddings->cls_token().normal_(0, options.initializer_range());
  embeddings->position_embeddings().copy_(mae_sincos_pos_embed(options.hidden_size(), options.grid()).unsqueeze(0));
}

MaeModelOutput MaeModelImpl::forward(const at::Tensor& pixel_values, const at::Tensor& noise,
                                     bool output_hidden_states, bool interpolate_pos_encoding) {
  check_pixels(options, pixel_values, interpolate_pos_encoding);
  MaskedTokens m = embeddings->forward(pixel_values, noise, interpolate_pos_encoding);
  nn::EncoderOutput enc = encoder->forward(m.kept, {}, output_hidden_states);
  MaeModelOutput out;
  out.last_hidden_state = layernorm->forward(enc.last_hidden_state);
  out.mask = m.mask;
  out.ids_restore = m.ids_restore;
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

at::Tensor MaeModelImpl::forward_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding) {
  return forward_intermediates(pixel_values, {}, false, false, interpolate_pos_encoding).last_hidden_state;
}

at::Tensor MaeModelImpl::pool(const at::Tensor& features) {
  return nn::class_token(features, options.hidden_size(), "MAE forward_head");
}

IntermediatesOutput MaeModelImpl::forward_intermediates(const at::Tensor& pixel_values,
                                                        const std::vector<int64_t>& indices, bool norm,
                                                        bool stop_early, bool interpolate_pos_encoding) {
  check_pixels(options, pixel_values, interpolate_pos_encoding);
  at::Tensor h = embeddings->forward_unmasked(pixel_values, interpolate_pos_encoding);
  auto [last, picked] = encoder->forward_intermediates(h, indices, {}, stop_early);
  IntermediatesOutput out;
  out.last_hidden_state = layernorm->forward(last);
  for (auto& t : picked) out.intermediates.push_back(norm ? layernorm->forward(t) : t);
  return out;
}

// ---- decoder ------------------------------------------------------------------------------------
MaeDecoderImpl::MaeDecoderImpl(MaeOptions options_) : Module("ViTMAEDecoder"), options(std::move(options_)) {
  reset();
}

void MaeDecoderImpl::reset() {
  const auto& o = options;
  const int64_t Dd = o.decoder_hidden_size();
  decoder_embed = register_module("decoder_embed", nn::Linear(o.hidden_size(), Dd));
  mask_token_ = add_parameter("mask_token", at::zeros({1, 1, Dd}));
  decoder_pos_embed_ =
      add_parameter("decoder_pos_embed", mae_sincos_pos_embed(Dd, o.grid()).unsqueeze(0), /*requires_grad=*/false);
  decoder_encoder = register_module(
      "decoder_encoder",
      vit_encoder(block_options(o, Dd, o.decoder_num_attention_heads(), o.decoder_intermediate_size()),
                  o.decoder_num_hidden_layers(), "ViTMAE"));
  decoder_norm = register_module("decoder_norm", nn::Norm(Dd, nn::NormKind::layer_norm, o.layer_norm_eps()));
  decoder_pred = register_module("decoder_pred",
                                 nn::Linear(Dd, o.patch_size() * o.patch_size() * o.num_channels()));
}

at::Tensor MaeDecoderImpl::forward(const at::Tensor& latent, const at::Tensor& ids_restore,
                                   bool interpolate_pos_encoding) {
  at::Tensor h = decoder_embed->forward(latent);  // [B, 1 + kept, Dd]
  const int64_t B = h.size(0), N = ids_restore.size(1), Dd = h.size(2);
  at::Tensor tokens = at::cat({h.slice(1, 1), mask_token().to(h.scalar_type()).expand({B, N + 1 - h.size(1), Dd})}, 1);
  tokens = at::gather(tokens, 1, ids_restore.unsqueeze(-1).expand({B, N, Dd}));
  h = at::cat({h.slice(1, 0, 1), tokens}, 1);
  at::Tensor pos = decoder_pos_embed();
  if (interpolate_pos_encoding) {
    // transformers resizes the decoder table along the sequence only (1 x N bicubic), not as a grid.
    at::Tensor grid = pos.slice(1, 1).reshape({1, 1, -1, Dd}).permute({0, 3, 1, 2});
    grid = at::upsample_bicubic2d(grid, {1, N}, /*align_corners=*/false).permute({0, 2, 3, 1}).reshape({1, -1, Dd});
    pos = at::cat({pos.slice(1, 0, 1), grid}, 1);
  }
  h = h + pos;
  h = decoder_encoder->forward(h).last_hidden_state;
  return decoder_pred->forward(decoder_norm->forward(h)).slice(1, 1);
}

// ---- pretraining --------------------------------------------------------------------------------
MaeForPreTrainingImpl::MaeForPreTrainingImpl(MaeOptions options_)
    : Module("ViTMAEForPreTraining"), options(std::move(options_)) {
  options.validate("vit_mae config");
  nn::build_then_init(*this);
}

void MaeForPreTrainingImpl::reset() {
  vit = register_module("vit", MaeModel(options));
  decoder = register_module("decoder", MaeDecoder(options));
}

void MaeForPreTrainingImpl::init_weights() {
  at::NoGradGuard g;
  vit->init_weights();
  const double std = options.initializer_range();
  for (const nn::LinearImpl* lin : {decoder->decoder_embed.get(), decoder->decoder_pred.get()}) {
    lin->weight().normal_(0, std);
    lin->bias().zero_();
  }
  init_vit_stack(*decoder->decoder_encoder, std);
  decoder->decoder_norm->reset_parameters();
  decoder->mask_token().normal_(0, std);
  decoder->decoder_pos_embed().copy_(
      mae_sincos_pos_embed(options.decoder_hidden_size(), options.grid()).unsqueeze(0));
}

at::Tensor MaeForPreTrainingImpl::patchify(const at::Tensor& px, bool interpolate_pos_encoding) const {
  check_pixels(options, px, interpolate_pos_encoding);
  const int64_t B = px.size(0), C = px.size(1), p = options.patch_size();
  const int64_t gh = px.size(2) / p, gw = px.size(3) / p;
  return px.reshape({B, C, gh, p, gw, p}).permute({0, 2, 4, 3, 5, 1}).reshape({B, gh * gw, p * p * C});
}

at::Tensor MaeForPreTrainingImpl::unpatchify(const at::Tensor& patches, int64_t height, int64_t width) const {
  const int64_t p = options.patch_size(), C = options.num_channels();
  height = height > 0 ? height : options.image_size();
  width = width > 0 ? width : options.image_size();
  const int64_t gh = height / p, gw = width / p, B = patches.size(0);
  TORCH_CHECK_VALUE(patches.dim() == 3 && patches.size(1) == gh * gw && patches.size(2) == p * p * C,
                    "unpatchify: expected [B, ", gh * gw, ", ", p * p * C, "] for ", height, "x", width,
                    " images, got ", patches.sizes());
  return patches.reshape({B, gh, gw, p, p, C}).permute({0, 5, 1, 3, 2, 4}).reshape({B, C, gh * p, gw * p});
}

MaePreTrainingOutput MaeForPreTrainingImpl::forward(const at::Tensor& pixel_values, const at::Tensor& noise,
                                                    bool output_hidden_states, bool interpolate_pos_encoding) {
  MaeModelOutput enc = vit->forward(pixel_values, noise, output_hidden_states, interpolate_pos_encoding);
  MaePreTrainingOutput out;
  out.logits = decoder->forward(enc.last_hidden_state, enc.ids_restore, interpolate_pos_encoding);
  at::Tensor target = patchify(pixel_values, interpolate_pos_encoding);
  if (options.norm_pix_loss()) {
    at::Tensor mean = target.mean(-1, /*keepdim=*/true);
    at::Tensor var = target.var(-1, /*unbiased=*/true, /*keepdim=*/true);
    target = (target - mean) / (var + 1e-6).pow(0.5);
  }
  at::Tensor per_patch = (out.logits - target).pow(2).mean(-1);
  // transformers divides by the masked count and returns NaN when it is 0; we refuse instead.
  TORCH_CHECK_VALUE(enc.mask.sum().item<double>() > 0, "mask_ratio ", options.mask_ratio(), " masks none of the ",
                    enc.mask.size(1), " patches: the reconstruction loss has nothing to predict (use ViTMAEModel for "
                    "features without masking, or raise mask_ratio)");
  out.loss = (per_patch * enc.mask).sum() / enc.mask.sum();
  out.mask = enc.mask;
  out.ids_restore = enc.ids_restore;
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

}  // namespace tessera::models
