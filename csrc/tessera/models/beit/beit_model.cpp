// BEiT embeddings, relative position bias, encoder and masked-image-modeling head
// (transformers' modeling_beit.py).
#include "tessera/models/beit/beit_model.h"

#include "tessera/models/vit/vit_layout.h"
#include "tessera/nn/activation.h"
#include "tessera/nn/init.h"
#include "tessera/nn/pooling.h"
#include "tessera/nn/pos_embed_resize.h"

#include <ATen/ATen.h>

namespace tessera::models {
namespace {

void check_mask(const at::Tensor& mask, int64_t batch, int64_t patches) {
  if (!mask.defined()) return;
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kBool, "bool_masked_pos must be a bool tensor, got ",
                    mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() == 2 && mask.size(0) == batch && mask.size(1) == patches, "bool_masked_pos must be [",
                    batch, ", ", patches, "] (batch, patches), got ", mask.sizes());
}

}  // namespace

at::Tensor beit_relative_position_index(int64_t gh, int64_t gw) {
  const int64_t rows = (2 * gh - 1) * (2 * gw - 1), area = gh * gw;
  auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor r = at::arange(gh, i64).repeat_interleave(gw), c = at::arange(gw, i64).repeat({gh});
  // Row-major (dy, dx) offset of every pair, shifted to be non-negative.
  at::Tensor dy = r.unsqueeze(1) - r.unsqueeze(0) + (gh - 1), dx = c.unsqueeze(1) - c.unsqueeze(0) + (gw - 1);
  at::Tensor index = at::empty({area + 1, area + 1}, i64);
  index.slice(0, 1).slice(1, 1).copy_(dy * (2 * gw - 1) + dx);
  index.select(0, 0).fill_(rows);      // cls -> token
  index.select(1, 0).fill_(rows + 1);  // token -> cls
  index.index_put_({0, 0}, rows + 2);  // cls -> cls
  return index;
}

// ---- relative position bias ---------------------------------------------------------------------
BeitRelativePositionBiasImpl::BeitRelativePositionBiasImpl(int64_t grid_, int64_t num_heads_)
    : Module("BeitRelativePositionBias"), grid(grid_), num_heads(num_heads_) {
  reset();
}

void BeitRelativePositionBiasImpl::reset() {
  table_ = add_parameter("relative_position_bias_table", at::zeros({(2 * grid - 1) * (2 * grid - 1) + 3, num_heads}));
}

at::Tensor BeitRelativePositionBiasImpl::forward(int64_t gh, int64_t gw) const {
  at::Tensor t = table();
  const int64_t old_side = 2 * grid - 1, rel = old_side * old_side;
  if (gh != grid || gw != grid) {  // resize the (dy, dx) part; the three cls rows stay
    at::Tensor sub = t.slice(0, 0, rel).reshape({1, old_side, old_side, num_heads}).permute({0, 3, 1, 2});
    sub = at::upsample_bilinear2d(sub, {2 * gh - 1, 2 * gw - 1}, /*align_corners=*/false);
    t = at::cat({sub.permute({0, 2, 3, 1}).reshape({-1, num_heads}), t.slice(0, rel)}, 0);
  }
  const int64_t L = gh * gw + 1;
  at::Tensor index = beit_relative_position_index(gh, gw).to(t.device());
  return t.index_select(0, index.view(-1)).view({L, L, num_heads}).permute({2, 0, 1}).contiguous();
}

at::Tensor BeitRelativePositionBiasImpl::attention_bias(const nn::LayerArgs& args, int64_t seq_len) const {
  const int64_t gh = args.grid_h > 0 ? args.grid_h : grid, gw = args.grid_w > 0 ? args.grid_w : grid;
  TORCH_CHECK_VALUE(gh * gw + 1 == seq_len, "BEiT relative position bias: ", seq_len, " tokens do not match a ", gh,
                    "x", gw, " patch grid plus the CLS token");
  return forward(gh, gw);
}

// ---- embeddings ---------------------------------------------------------------------------------
BeitEmbeddingsImpl::BeitEmbeddingsImpl(BeitOptions options_) : Module("BeitEmbeddings"), options(std::move(options_)) {
  reset();
}

void BeitEmbeddingsImpl::reset() {
  const int64_t D = options.hidden_size();
  cls_token_ = add_parameter("cls_token", at::zeros({1, 1, D}));
  mask_token_ = options.use_mask_token() ? add_parameter("mask_token", at::zeros({1, 1, D})) : nn::Slot{};
  projection = nn::PatchEmbed(std::dynamic_pointer_cast<nn::PatchEmbedImpl>(nn::register_at(
      *this, "patch_embeddings.projection",
      nn::PatchEmbed(nn::PatchEmbedOptions(options.num_channels(), D, options.patch_size()).bias(true)).ptr(),
      {{"patch_embeddings", "BeitPatchEmbeddings"}})));
  position_embeddings_ = options.use_absolute_position_embeddings()
                             ? add_parameter("position_embeddings", at::zeros({1, options.num_patches() + 1, D}))
                             : nn::Slot{};
}

at::Tensor BeitEmbeddingsImpl::forward(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos) const {
  at::Tensor x = projection->forward(pixel_values);  // [B, N, D]
  const int64_t B = x.size(0), N = x.size(1);
  check_mask(bool_masked_pos, B, N);
  if (bool_masked_pos.defined()) {
    TORCH_CHECK_VALUE(options.use_mask_token(), "bool_masked_pos given but the model has no mask token "
                      "(config use_mask_token is false)");
    at::Tensor w = bool_masked_pos.unsqueeze(-1).to(x.scalar_type());
    x = x * (1 - w) + mask_token().to(x.scalar_type()) * w;
  }
  x = at::cat({cls_token().to(x.scalar_type()).expand({B, 1, -1}), x}, 1);
  if (options.use_absolute_position_embeddings()) {
    at::Tensor pos = position_embeddings();
    const int64_t gh = pixel_values.size(2) / options.patch_size(), gw = pixel_values.size(3) / options.patch_size();
    if (N != options.num_patches() || pixel_values.size(2) != pixel_values.size(3)) {
      pos = nn::pos_embed_resize(pos, gh, gw, options.grid(), options.grid(), 1, /*antialias=*/false);
    }
    x = x + pos;
  }
  return at::dropout(x, options.hidden_dropout_prob(), is_training());
}

// ---- model --------------------------------------------------------------------------------------
BeitModelImpl::BeitModelImpl(BeitOptions options_, bool add_pooling_layer_)
    : Module("BeitModel"), options(std::move(options_)), add_pooling_layer(add_pooling_layer_) {
  options.validate("beit config");
  nn::build_then_init(*this);
}

void BeitModelImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", BeitEmbeddings(o));
  const int64_t L = o.num_hidden_layers(), grid = o.grid(), heads = o.num_attention_heads();
  nn::BlockLayout layout = vit_layer_layout("Beit");
  layout.position_bias = "attention.attention.relative_position_bias";
  auto block = nn::TransformerBlockOptions(o.hidden_size(), heads, o.intermediate_size())
                   .act(nn::activation_from_name(o.hidden_act()))
                   .norm_eps(o.layer_norm_eps())
                   .attention_dropout(o.attention_probs_dropout_prob())
                   .hidden_dropout(o.hidden_dropout_prob())
                   .k_bias(false)
                   .layer_scale_init(o.layer_scale_init_value());
  if (o.use_relative_position_bias()) {
    block.position_bias([grid, heads] { return BeitRelativePositionBias(grid, heads).ptr(); });
  }
  const double rate = o.drop_path_rate();
  encoder = register_module(
      "encoder", nn::Encoder(
                     L,
                     [block, layout, rate, L](int64_t i) {
                       auto b = block;  // stochastic depth grows linearly with depth
                       b.drop_path(rate * static_cast<double>(i) / static_cast<double>(std::max<int64_t>(L - 1, 1)));
                       return nn::TransformerBlock(b, layout).ptr();
                     },
                     "layer", "BeitEncoder"));
  shared_position_bias = nullptr;
  if (o.use_shared_relative_position_bias()) {
    shared_position_bias = BeitRelativePositionBias(std::dynamic_pointer_cast<BeitRelativePositionBiasImpl>(
        nn::register_at(*this, "encoder.relative_position_bias", BeitRelativePositionBias(grid, heads).ptr())));
  }
  const auto ln = [&] { return nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()); };
  layernorm = o.use_mean_pooling() ? nn::Norm{nullptr} : register_module("layernorm", ln());
  pooler_norm = nullptr;
  if (add_pooling_layer && o.use_mean_pooling()) {
    pooler_norm = nn::Norm(std::dynamic_pointer_cast<nn::NormImpl>(
        nn::register_at(*this, "pooler.layernorm", ln().ptr(), {{"pooler", "BeitPooler"}})));
  }
}

void BeitModelImpl::init_weights() {
  at::NoGradGuard g;
  const double std = options.initializer_range();
  nn::init_linears_and_norms(*this, std);
  for (const auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<nn::PatchEmbedImpl>()) {
      conv->weight().normal_(0, std);
      conv->bias().zero_();
    } else if (auto* bias = m->as<BeitRelativePositionBiasImpl>()) {
      bias->table().zero_();
    } else if (auto* block = m->as<nn::TransformerBlockImpl>()) {
      if (block->layer_scale1().defined()) {
        block->layer_scale1().fill_(options.layer_scale_init_value());
        block->layer_scale2().fill_(options.layer_scale_init_value());
      }
    }
  }
  // The BEiT release's tokens (trunc_normal(std=0.02), whose cut at +-2 never binds), not
  // transformers' zeros: a zero mask token makes masked inputs exactly zero, and LayerNorm
  // (eps 1e-12) then scales their gradients by ~1e6.
  for (const at::Tensor* t : {&embeddings->cls_token(), &embeddings->mask_token()})
    if (t->defined()) t->normal_(0.0, options.initializer_range());
  if (embeddings->position_embeddings().defined()) embeddings->position_embeddings().zero_();
}

std::pair<at::Tensor, nn::LayerArgs> BeitModelImpl::embed(const at::Tensor& px, const at::Tensor& mask) {
  check_pixel_values(px, options.num_channels(), options.patch_size());
  nn::LayerArgs args;
  args.grid_h = px.size(2) / options.patch_size();
  args.grid_w = px.size(3) / options.patch_size();
  if (shared_position_bias) args.position_bias = shared_position_bias->forward(args.grid_h, args.grid_w).unsqueeze(0);
  return {embeddings->forward(px, mask), args};
}

BeitModelOutput BeitModelImpl::forward(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos,
                                       bool output_hidden_states) {
  auto [x, args] = embed(pixel_values, bool_masked_pos);
  nn::EncoderOutput enc = encoder->forward(x, args, output_hidden_states);
  BeitModelOutput out;
  out.last_hidden_state = layernorm ? layernorm->forward(enc.last_hidden_state) : enc.last_hidden_state;
  if (add_pooling_layer) out.pooler_output = pool(out.last_hidden_state);
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

at::Tensor BeitModelImpl::forward_features(const at::Tensor& pixel_values) {
  return forward_intermediates(pixel_values, {}).last_hidden_state;
}

at::Tensor BeitModelImpl::pool(const at::Tensor& features) {
  const char* what = "BEiT forward_head";
  if (!options.use_mean_pooling()) return nn::class_token(features, options.hidden_size(), what);
  const at::Tensor mean = nn::patch_mean(features, options.hidden_size(), 1, what);
  return pooler_norm ? pooler_norm->forward(mean) : mean;
}

IntermediatesOutput BeitModelImpl::forward_intermediates(const at::Tensor& pixel_values,
                                                         const std::vector<int64_t>& indices, bool norm,
                                                         bool stop_early) {
  auto [x, args] = embed(pixel_values, {});
  auto [last, picked] = encoder->forward_intermediates(x, indices, args, stop_early);
  const auto final_norm = [&](const at::Tensor& t) { return layernorm ? layernorm->forward(t) : t; };
  IntermediatesOutput out;
  out.last_hidden_state = final_norm(last);
  for (auto& t : picked) out.intermediates.push_back(norm ? final_norm(t) : t);
  return out;
}

// ---- masked image modeling ----------------------------------------------------------------------
BeitForMaskedImageModelingImpl::BeitForMaskedImageModelingImpl(BeitOptions options_)
    : Module("BeitForMaskedImageModeling"), options(std::move(options_)) {
  options.validate("beit config");
  nn::build_then_init(*this);
}

void BeitForMaskedImageModelingImpl::reset() {
  beit = register_module("beit", BeitModel(options, /*add_pooling_layer=*/false));
  layernorm = register_module("layernorm", nn::Norm(options.hidden_size(), nn::NormKind::layer_norm,
                                                    options.layer_norm_eps()));
  lm_head = register_module("lm_head", nn::Linear(options.hidden_size(), options.vocab_size()));
}

void BeitForMaskedImageModelingImpl::init_weights() {
  at::NoGradGuard g;
  beit->init_weights();
  layernorm->reset_parameters();
  lm_head->weight().normal_(0, options.initializer_range());
  lm_head->bias().zero_();
}

BeitMaskedLMOutput BeitForMaskedImageModelingImpl::forward(const at::Tensor& pixel_values,
                                                           const at::Tensor& bool_masked_pos, const at::Tensor& labels,
                                                           bool output_hidden_states) {
  BeitModelOutput enc = beit->forward(pixel_values, bool_masked_pos, output_hidden_states);
  BeitMaskedLMOutput out;
  out.logits = lm_head->forward(layernorm->forward(enc.last_hidden_state).slice(1, 1));
  out.hidden_states = std::move(enc.hidden_states);
  if (labels.defined()) {
    TORCH_CHECK_VALUE(bool_masked_pos.defined(), "labels given without bool_masked_pos: the loss is over masked patches");
    TORCH_CHECK_VALUE(labels.scalar_type() == at::kLong, "labels must be int64 visual-token ids, got ",
                      labels.scalar_type());
    at::Tensor target = labels;
    if (labels.dim() == 2 && labels.sizes() == bool_masked_pos.sizes()) target = labels.masked_select(bool_masked_pos);
    at::Tensor picked = out.logits.index({bool_masked_pos});
    TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == picked.size(0), "labels must be [", picked.size(0),
                      "] (one per masked patch) or ", bool_masked_pos.sizes(), " (one per patch), got ",
                      labels.sizes());
    // -100 is ignored, as in transformers' CrossEntropyLoss; anything else must be a token id.
    const bool valid = ((target >= 0).logical_and(target < options.vocab_size()).logical_or(target == -100)).all().item<bool>();
    TORCH_CHECK_VALUE(valid, "labels must be visual-token ids in [0, ", options.vocab_size(), ") or -100 (ignored)");
    // Cross-entropy over no target is NaN (transformers returns it); we refuse instead.
    TORCH_CHECK_VALUE(target.ne(-100).any().item<bool>(), "nothing to predict: bool_masked_pos masks ",
                      picked.size(0), " patch(es) and none of their labels is a token id (all -100); every image "
                      "needs at least one masked patch with a label");
    out.loss = at::cross_entropy_loss(picked, target);
  }
  return out;
}

}  // namespace tessera::models
