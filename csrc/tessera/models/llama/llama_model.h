// LLaMA (Touvron et al. 2023) with the names and outputs of transformers' LlamaModel and
// LlamaForCausalLM: token embeddings, decoder layers (RMSNorm, rotary attention with grouped
// key/value heads, SwiGLU), final norm, LM head (optionally tied to the embeddings), and the
// shifted next-token loss with -100 ignored. Decoding reuses keys and values through an
// nn::KVCache (llama_generate.h drives it).
#pragma once
#include "tessera/models/llama/llama_options.h"
#include "tessera/nn/embedding.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/norm.h"

#include <vector>

namespace tessera::models {

/// transformers' CausalLMOutputWithPast, with the loss also as (sum, count) for token-weighted
/// accumulation across micro-batches and ranks.
struct CausalLMOutput {
  static constexpr const char* kName = "CausalLMOutputWithPast";
  at::Tensor loss;         ///< [] mean over supervised tokens (labels given)
  at::Tensor logits;       ///< [B, L, vocab] (the last `logits_to_keep` positions when set)
  std::vector<at::Tensor> hidden_states;
  at::Tensor loss_sum;     ///< [] summed token losses
  at::Tensor num_tokens;   ///< [] int64 supervised tokens

  template <class V>
  void visit_fields(V&& v) const {
    v("loss", loss);
    v("logits", logits);
    v("hidden_states", hidden_states);
    v("loss_sum", loss_sum);
    v("num_tokens", num_tokens);
  }
};

/// Shifted next-token cross-entropy: position t predicts labels[t + 1]; -100 is ignored.
/// Returns (sum, count) in fp32 / int64.
std::pair<at::Tensor, at::Tensor> causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

/// LlamaForCausalLM: `model` (transformers' LlamaModel: embed_tokens, layers.N, norm) and
/// `lm_head`. `model` is the layer stack itself (an nn::Encoder named LlamaModel) holding the
/// embeddings and the final norm, so the checkpoint's `model.layers.N` needs no extra level.
/// A model whose vocabulary resize_token_embeddings changes: a LlamaForCausalLM, or a model around
/// one (LLaVA, BLIP-2), which keeps its copy of the LM's options in step (a clone is built from it).
class ResizableVocabulary {
 public:
  virtual ~ResizableVocabulary() = default;
  /// `embed` [n, hidden] (and `head` [n, hidden] without tied embeddings) become the token tables
  /// in place (the parameters keep their identity, dtype and requires_grad), and every size that
  /// follows the vocabulary with them. A token id the config names (pad, image) past the new end
  /// is refused.
  virtual void set_vocabulary(const at::Tensor& embed, const at::Tensor& head) = 0;
};

/// Example:
///   LlamaForCausalLM lm(LlamaOptions::from_file("config.json"));
///   auto out = lm->forward(ids, {}, {}, {}, /*labels=*/ids);   // out.loss, out.logits
class LlamaForCausalLMImpl : public nn::Module<LlamaForCausalLMImpl>, public ResizableVocabulary {
 public:
  explicit LlamaForCausalLMImpl(LlamaOptions options = {});
  void reset() override;
  /// transformers' init: normal(initializer_range) linears and embeddings, unit norms.
  void init_weights();
  /// `attention_mask` [B, past + L] 0/1 (padding); `position_ids` [B, L] (default: past..past+L-1);
  /// `inputs_embeds` replaces the token lookup; `cache` holds past keys and values.
  CausalLMOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                         const at::Tensor& position_ids = {}, const at::Tensor& inputs_embeds = {},
                         const at::Tensor& labels = {}, bool output_hidden_states = false,
                         nn::KVCache* cache = nullptr, int64_t logits_to_keep = 0);
  /// The final-norm hidden states [B, L, D] (and every layer's with `output_hidden_states`).
  std::pair<at::Tensor, std::vector<at::Tensor>> decode(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                                        const at::Tensor& position_ids, const at::Tensor& inputs_embeds,
                                                        bool output_hidden_states, nn::KVCache* cache);
  /// The LM head's weight: lm_head.weight, or the embeddings when tied.
  const at::Tensor& output_embeddings() const;
  void set_gradient_checkpointing(bool on) { model->gradient_checkpointing = on; }
  /// transformers' resize_token_embeddings once the new rows are drawn (ResizableVocabulary).
  void set_vocabulary(const at::Tensor& embed, const at::Tensor& head) override;
  LlamaOptions options;
  nn::Encoder model{nullptr};   ///< model.layers.N
  nn::Embedding embed_tokens{nullptr};  ///< model.embed_tokens
  nn::Norm norm{nullptr};       ///< model.norm
  nn::Linear lm_head{nullptr};  ///< absent with tie_word_embeddings
};
TORCH_MODULE(LlamaForCausalLM);

/// ResizableVocabulary for a model around `lm` (LLaVA, BLIP-2): `image_token_index` must stay in
/// the vocabulary, and the parent's copy of the LM's options follows (a clone is built from it).
void set_language_model_vocabulary(LlamaForCausalLMImpl& lm, LlamaOptions& parent_copy, int64_t image_token_index,
                                   const at::Tensor& embed, const at::Tensor& head);

}  // namespace tessera::models
