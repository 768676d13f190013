// The Querying Transformer of BLIP-2 (transformers' Blip2QFormerModel, Blip2TextEmbeddings): BERT
// post-norm layers on the generic nn::TransformerBlock (its post-norm, cross-attention and query
// feed-forward branches), the first `query_length` tokens being the learned queries. Layer i
// cross-attends to the image features when i % cross_attention_frequency == 0; with
// use_qformer_text_input, text tokens after the queries share the self-attention and take the
// text feed-forward (`intermediate`/`output`), and never see the image directly.
#pragma once
#include "tessera/models/blip2/blip2_options.h"
#include "tessera/models/outputs.h"
#include "tessera/nn/embedding.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/norm.h"

namespace tessera::models {

/// `embeddings.{word_embeddings, position_embeddings}`: text embeddings (absolute positions from
/// 0), placed after the query embeddings when given. No norm here: the Q-Former's `layernorm` follows.
class Blip2TextEmbeddingsImpl : public nn::Module<Blip2TextEmbeddingsImpl> {
 public:
  explicit Blip2TextEmbeddingsImpl(Blip2QFormerOptions options);
  void reset() override;
  /// input_ids [B, T] (may be undefined) and query_embeds [B or 1, Q, H] (may be undefined) ->
  /// [B, Q + T, H].
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& query_embeds = {}) const;
  Blip2QFormerOptions options;
  nn::Embedding word_embeddings{nullptr}, position_embeddings{nullptr};
};
TORCH_MODULE(Blip2TextEmbeddings);

/// Example: `auto out = qformer->forward(queries, -1, {}, image_embeds);  // out.last_hidden_state`
class Blip2QFormerModelImpl : public nn::Module<Blip2QFormerModelImpl> {
 public:
  explicit Blip2QFormerModelImpl(Blip2QFormerOptions options = {});
  void reset() override;
  void init_weights();
  /// query_embeds [B, L, H]: `query_length` learned queries (-1: all L) then text tokens.
  /// attention_mask: [B, L] 0/1 padding or [B, L, L] 0/1 (row i: what token i may see).
  /// encoder_hidden_states [B, S, encoder_hidden_size]: the image features (needed when there are
  /// queries), encoder_attention_mask [B, S] 0/1. pooler_output is the first token's state.
  PooledOutput forward(const at::Tensor& query_embeds, int64_t query_length = -1, const at::Tensor& attention_mask = {},
                       const at::Tensor& encoder_hidden_states = {}, const at::Tensor& encoder_attention_mask = {},
                       bool output_hidden_states = false);
  void set_gradient_checkpointing(bool on) { encoder->gradient_checkpointing = on; }

  Blip2QFormerOptions options;
  nn::Norm layernorm{nullptr};
  nn::Encoder encoder{nullptr};
};
TORCH_MODULE(Blip2QFormerModel);

/// A [B, L] or [B, L, L] 0/1 (or bool) attention mask as the additive [B, 1, 1 or L, L] one.
at::Tensor qformer_attention_mask(const at::Tensor& mask, int64_t batch, int64_t length, at::ScalarType dtype,
                                  const std::string& what);

}  // namespace tessera::models
