// CLIP text transformer (transformers' CLIPTextTransformer): token + position embeddings, causal
// pre-LN encoder, final_layer_norm, pooled at the end-of-text token.
#pragma once
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/embedding.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/norm.h"

namespace tessera::models {

/// `embeddings.{token_embedding, position_embedding}.weight`
class ClipTextEmbeddingsImpl : public nn::Module<ClipTextEmbeddingsImpl> {
 public:
  explicit ClipTextEmbeddingsImpl(ClipTextOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& input_ids) const;
  ClipTextOptions options;
  nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

class ClipTextTransformerImpl : public nn::Module<ClipTextTransformerImpl> {
 public:
  explicit ClipTextTransformerImpl(ClipTextOptions options = {});
  void reset() override;
  /// transformers' CLIPPreTrainedModel._init_weights, once.
  void init_weights();
  /// input_ids [B, L] int64 (L <= max_position_embeddings), attention_mask [B, L] 0/1 or undefined.
  /// last_hidden_state is after final_layer_norm; pooler_output is its row at the EOS token.
  PooledOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                       bool output_hidden_states = false);
  /// timm's forward_features: final_layer_norm over every token [B, L, D] (= last_hidden_state).
  at::Tensor forward_features(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  /// timm's forward_intermediates over the text layers (final_layer_norm applied when `norm`);
  /// last_hidden_state: final_layer_norm of the last layer run.
  IntermediatesOutput forward_intermediates(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                            const std::vector<int64_t>& indices, bool norm = false,
                                            bool stop_early = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  ClipTextOptions options;
  ClipTextEmbeddings embeddings{nullptr};
  nn::Encoder encoder{nullptr};
  nn::Norm final_layer_norm{nullptr};

 private:
  /// Validated ids, embeddings and the causal + padding attention arguments.
  std::pair<at::Tensor, nn::LayerArgs> embed(const at::Tensor& input_ids, const at::Tensor& attention_mask) const;
};
TORCH_MODULE(ClipTextTransformer);

}  // namespace tessera::models
