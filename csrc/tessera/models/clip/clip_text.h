// CLIP text transformer (transformers' CLIPTextTransformer): token + position embeddings, causal
// pre-LN encoder, final_layer_norm, pooled at the end-of-text token.
#pragma once
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/encoder.h"

#include <torch/nn/modules/embedding.h>

namespace tessera::models {

/// `embeddings.{token_embedding, position_embedding}.weight`
class ClipTextEmbeddingsImpl : public torch::nn::Cloneable<ClipTextEmbeddingsImpl> {
 public:
  explicit ClipTextEmbeddingsImpl(ClipTextOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& input_ids);
  ClipTextOptions options;
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
};
TORCH_MODULE(ClipTextEmbeddings);

class ClipTextTransformerImpl : public torch::nn::Cloneable<ClipTextTransformerImpl> {
 public:
  explicit ClipTextTransformerImpl(ClipTextOptions options = {});
  void reset() override;
  void init_weights();
  /// input_ids [B, L] int64 (L <= max_position_embeddings), attention_mask [B, L] 0/1 or undefined.
  /// last_hidden_state is after final_layer_norm; pooler_output is its row at the EOS token.
  PooledOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                       bool output_hidden_states = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  ClipTextOptions options;
  ClipTextEmbeddings embeddings{nullptr};
  nn::Encoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(ClipTextTransformer);

}  // namespace tessera::models
