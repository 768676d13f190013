// BLIP-2's first stage (Li et al. 2023, section 3.2; LAVIS's Blip2Qformer): the Q-Former learns,
// against a frozen image tower's features, image-text contrast (ITC), matching (ITM) and
// image-grounded generation (ITG). Here are the parts C++ computes: the three attention masks from
// one function, the ITC features, the ITM logits and the ITG token loss with BERT's LM head (tied
// to the word embeddings). Gathering across ranks, ITC's targets and the hard negatives are
// Python's (tessera/models/blip2_stage1.py), as in the CLIP loss.
#pragma once
#include "tessera/models/blip2/qformer.h"
#include "tessera/nn/linear.h"

namespace tessera::models {

/// Which stage-1 pass a mask is for.
enum class Stage1Pass {
  itc,  ///< queries see queries, text sees text: ITC's two unimodal passes in one
  itm,  ///< every real token sees every real token (bidirectional over [queries; text])
  itg,  ///< queries see queries; text token t sees every query and the real text tokens <= t
};
Stage1Pass stage1_pass_from_name(const std::string& name);

/// [B, Q + T, Q + T] int64 0/1 (row i: the tokens token i may see) for `num_queries` queries
/// followed by text whose padding is `text_mask` [B, T] 0/1.
at::Tensor stage1_mask(Stage1Pass pass, int64_t num_queries, const at::Tensor& text_mask);

/// BERT's LM prediction head (`transform.dense`, gelu, `transform.LayerNorm`, then the word
/// embeddings as decoder plus `bias`): BertLMPredictionHead with the decoder tied.
class BertLMPredictionHeadImpl : public nn::Module<BertLMPredictionHeadImpl> {
 public:
  explicit BertLMPredictionHeadImpl(Blip2QFormerOptions options);
  void reset() override;
  /// states [..., H] and the (tied) decoder weight [V, H] -> logits [..., V].
  at::Tensor forward(const at::Tensor& states, const at::Tensor& decoder) const;
  const at::Tensor& bias() const { return param(bias_); }
  Blip2QFormerOptions options;
  nn::Linear dense{nullptr};
  nn::Norm norm{nullptr};

 private:
  nn::Slot bias_;
};
TORCH_MODULE(BertLMPredictionHead);

/// Blip2ForImageTextRetrieval's tree (`query_tokens`, `embeddings`, `qformer`, `vision_projection`,
/// `text_projection`, `itm_head`) plus BERT's LM head (`cls.predictions.transform.{dense,
/// LayerNorm}`, `cls.predictions.bias`; its decoder is `embeddings.word_embeddings`) and the ITC
/// temperature `temp` (0.07). The image tower is not part of it: it reads `image_embeds`.
class Blip2ForPretrainingImpl : public nn::Module<Blip2ForPretrainingImpl> {
 public:
  explicit Blip2ForPretrainingImpl(Blip2Options options = {});
  void reset() override;
  void init_weights();
  /// ITC features of one joint pass: image [B, Q, E] and text [B, E], both L2-normalised.
  std::pair<at::Tensor, at::Tensor> itc_features(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                                                 const at::Tensor& attention_mask);
  /// ITM logits [N, 2] (no match, match) of image_embeds[i] with text i.
  at::Tensor itm_logits(const at::Tensor& image_embeds, const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// ITG: [bos_token_id] replaces the first text token ([CLS] -> [DEC]); the next-token loss over
  /// the real text tokens, with label smoothing as LAVIS. Returns (sum, count).
  std::pair<at::Tensor, at::Tensor> lm_loss(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                                            const at::Tensor& attention_mask, int64_t bos_token_id,
                                            double label_smoothing = 0.1);
  /// ITG logits [B, T, vocab] of `input_ids` as given (the caller puts [DEC] first): greedy captions.
  at::Tensor itg_logits(const at::Tensor& image_embeds, const at::Tensor& input_ids, const at::Tensor& attention_mask);
  /// The LM head's logits for Q-Former text states [B, T, H] -> [B, T, vocab].
  at::Tensor lm_logits(const at::Tensor& states) const;
  const at::Tensor& query_tokens() const { return param(query_tokens_); }
  const at::Tensor& temp() const { return param(temp_); }
  void set_gradient_checkpointing(bool on) { qformer->set_gradient_checkpointing(on); }

  Blip2Options options;
  Blip2TextEmbeddings embeddings{nullptr};
  Blip2QFormerModel qformer{nullptr};
  nn::Linear vision_projection{nullptr}, text_projection{nullptr}, itm_head{nullptr};
  BertLMPredictionHead lm_head{nullptr};  ///< cls.predictions

 private:
  at::Tensor joint_states(const at::Tensor& image_embeds, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                          Stage1Pass pass);
  nn::Slot query_tokens_, temp_;
};
TORCH_MODULE(Blip2ForPretraining);

}  // namespace tessera::models
