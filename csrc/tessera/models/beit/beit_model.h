// BEiT (Bao et al. 2021, "BERT Pre-Training of Image Transformers") with the names and outputs of
// transformers' BeitModel / BeitForMaskedImageModeling: a mask token that replaces the patches in
// `bool_masked_pos`, relative position bias (per layer or shared), layer scale, stochastic depth,
// and an LM head over the visual-token vocabulary with the loss on masked positions only.
// Checkpoint tree: `beit.encoder.layer.N` (ViT layout), `...attention.attention.relative_position_bias`
// per layer, `beit.encoder.relative_position_bias` when shared.
#pragma once
#include "tessera/models/beit/beit_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/patch_embed.h"
#include "tessera/nn/transformer_block.h"

#include <vector>

namespace tessera::models {

/// transformers' BeitModelOutputWithPooling.
struct BeitModelOutput {
  static constexpr const char* kName = "BeitModelOutputWithPooling";
  at::Tensor last_hidden_state;  ///< [B, 1 + N, D]
  at::Tensor pooler_output;      ///< [B, D]: layernormed patch mean, or the CLS token (undefined without pooler)
  std::vector<at::Tensor> hidden_states;

  template <class V>
  void visit_fields(V&& v) const {
    v("last_hidden_state", last_hidden_state);
    v("pooler_output", pooler_output);
    v("hidden_states", hidden_states);
  }
};

/// transformers' MaskedLMOutput.
struct BeitMaskedLMOutput {
  static constexpr const char* kName = "MaskedLMOutput";
  at::Tensor loss;    ///< [] cross-entropy over masked positions (when labels are given)
  at::Tensor logits;  ///< [B, N, vocab_size]
  std::vector<at::Tensor> hidden_states;

  template <class V>
  void visit_fields(V&& v) const {
    v("loss", loss);
    v("logits", logits);
    v("hidden_states", hidden_states);
  }
};

/// [1 + gh*gw, 1 + gh*gw] indices into a relative position table of (2gh-1)(2gw-1) + 3 rows; the
/// last three rows are cls->token, token->cls and cls->cls.
at::Tensor beit_relative_position_index(int64_t grid_h, int64_t grid_w);

/// `relative_position_bias_table` [(2gh-1)(2gw-1) + 3, heads] for the configured patch grid; other
/// grids resize the table bilinearly (transformers' BeitRelativePositionBias).
class BeitRelativePositionBiasImpl : public nn::Module<BeitRelativePositionBiasImpl>, public nn::PositionBias {
 public:
  BeitRelativePositionBiasImpl(int64_t grid, int64_t num_heads);
  void reset() override;
  /// [heads, 1 + gh*gw, 1 + gh*gw]
  at::Tensor forward(int64_t grid_h, int64_t grid_w) const;
  at::Tensor attention_bias(const nn::LayerArgs& args, int64_t seq_len) const override;
  const at::Tensor& table() const { return param(table_); }
  int64_t grid, num_heads;

 private:
  nn::Slot table_;
};
TORCH_MODULE(BeitRelativePositionBias);

/// `cls_token`, `mask_token`, `patch_embeddings.projection`, `position_embeddings` (the last two
/// tokens only when configured).
class BeitEmbeddingsImpl : public nn::Module<BeitEmbeddingsImpl> {
 public:
  explicit BeitEmbeddingsImpl(BeitOptions options);
  void reset() override;
  /// [B, C, H, W] -> [B, 1 + N, D]; patches where `bool_masked_pos` [B, N] is true become the mask
  /// token. Any multiple of the patch size works: absolute position embeddings are resized
  /// (bicubic) as transformers does, with or without its interpolate_pos_encoding flag.
  at::Tensor forward(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos) const;
  const at::Tensor& cls_token() const { return param(cls_token_); }
  const at::Tensor& mask_token() const { return param(mask_token_); }
  const at::Tensor& position_embeddings() const { return param(position_embeddings_); }
  BeitOptions options;
  nn::PatchEmbed projection{nullptr};

 private:
  nn::Slot cls_token_, mask_token_, position_embeddings_;
};
TORCH_MODULE(BeitEmbeddings);

/// BeitModel: embeddings -> encoder (relative position bias) -> layernorm -> pooler.
class BeitModelImpl : public nn::Module<BeitModelImpl> {
 public:
  explicit BeitModelImpl(BeitOptions options = {}, bool add_pooling_layer = true);
  void reset() override;
  /// transformers' BEiT init (normal(initializer_range) linears and patch projection, zero
  /// biases and bias tables, layer scale at layer_scale_init_value), except the class and mask
  /// tokens: normal(initializer_range) as the BEiT release, not zeros.
  void init_weights();
  BeitModelOutput forward(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos = {},
                          bool output_hidden_states = false);
  /// timm's forward_features: `layernorm` over every token [B, 1 + N, D] (= last_hidden_state;
  /// no norm with use_mean_pooling, where timm's `norm` is Identity too). No mask token.
  at::Tensor forward_features(const at::Tensor& pixel_values);
  /// timm's forward_head pooling of forward_features' tokens [B, D]: with use_mean_pooling the patch
  /// mean, through pooler.layernorm where this encoder has a pooler (timm's fc_norm); else the
  /// class token. Equals pooler_output.
  at::Tensor pool(const at::Tensor& features);
  /// timm's forward_intermediates: the outputs of the layers in `indices` (negative from the end),
  /// with the relative position bias of forward; `layernorm` applied when `norm` (none with
  /// use_mean_pooling); no layer past the last index when `stop_early`. last_hidden_state is the
  /// (normed) output of the last layer run.
  IntermediatesOutput forward_intermediates(const at::Tensor& pixel_values, const std::vector<int64_t>& indices,
                                            bool norm = false, bool stop_early = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }
  BeitOptions options;
  bool add_pooling_layer;
  BeitEmbeddings embeddings{nullptr};
  nn::Encoder encoder{nullptr};
  BeitRelativePositionBias shared_position_bias{nullptr};  ///< at encoder.relative_position_bias
  nn::Norm layernorm{nullptr};                             ///< absent with use_mean_pooling
  nn::Norm pooler_norm{nullptr};                           ///< pooler.layernorm, with use_mean_pooling

 private:
  std::pair<at::Tensor, nn::LayerArgs> embed(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos);
};
TORCH_MODULE(BeitModel);

/// BeitForMaskedImageModeling. Example:
///   BeitForMaskedImageModeling beit(BeitOptions().use_mask_token(true).vocab_size(8192));
///   auto out = beit->forward(images, mask, tokens);   // out.loss over masked patches
class BeitForMaskedImageModelingImpl : public nn::Module<BeitForMaskedImageModelingImpl> {
 public:
  explicit BeitForMaskedImageModelingImpl(BeitOptions options = {});
  void reset() override;
  void init_weights();
  /// `labels`: the visual tokens of the masked patches in order ([M], M = mask.sum(), as
  /// transformers) or of every patch ([B, N]); the loss is their cross-entropy.
  BeitMaskedLMOutput forward(const at::Tensor& pixel_values, const at::Tensor& bool_masked_pos = {},
                             const at::Tensor& labels = {}, bool output_hidden_states = false);
  void set_gradient_checkpointing(bool on) { beit->set_gradient_checkpointing(on); }
  BeitOptions options;
  BeitModel beit{nullptr};
  nn::Norm layernorm{nullptr};
  nn::Linear lm_head{nullptr};
};
TORCH_MODULE(BeitForMaskedImageModeling);

}  // namespace tessera::models
