// BLIP-2 (Li et al. 2023) with the names and outputs of transformers' Blip2ForConditionalGeneration
// and Blip2ForImageTextRetrieval: the image tower's post-normed tokens, `query_tokens` that read
// them through the Q-Former, then either `language_projection` into a LLaMA whose prompt holds one
// image token per query (spliced as LLaVA's), or the retrieval heads (ITC: the best of the
// queries' similarities to the text's first token; ITM: `itm_head` averaged over the queries).
#pragma once
#include "tessera/models/blip2/blip2_vision.h"
#include "tessera/models/blip2/qformer.h"
#include "tessera/models/llama/llama_generate.h"
#include "tessera/models/llama/llama_model.h"

#include <utility>

namespace tessera::models {

/// transformers' Blip2ImageTextMatchingModelOutput.
struct Blip2ImageTextMatchingOutput {
  static constexpr const char* kName = "Blip2ImageTextMatchingModelOutput";
  at::Tensor logits_per_image;  ///< ITC [B_img, B_txt] or ITM [B, 2]
  at::Tensor logits_per_text;   ///< its transpose
  at::Tensor text_embeds;       ///< ITC: normalised [B, image_text_hidden_size]; ITM: Q-Former states
  at::Tensor image_embeds;      ///< ITC: normalised [B, Q, image_text_hidden_size]; ITM: undefined
  template <class V>
  void visit_fields(V&& v) const {
    v("logits_per_image", logits_per_image);
    v("logits_per_text", logits_per_text);
    v("text_embeds", text_embeds);
    v("image_embeds", image_embeds);
  }
};

/// What both BLIP-2 heads share: the tower's post-normed tokens read by the learned queries
/// through the Q-Former -> (the tower's outputs, the Q-Former's: last_hidden_state
/// [B, num_query_tokens, qformer hidden]).
std::pair<PooledOutput, PooledOutput> blip2_query_output(Blip2VisionModelImpl& vision, Blip2QFormerModelImpl& qformer,
                                                         const at::Tensor& query_tokens, const at::Tensor& pixel_values,
                                                         bool interpolate_pos_encoding = false);

/// transformers' Blip2ForConditionalGenerationModelOutput: the loss and logits, then each part's
/// outputs (tower, Q-Former, LM), then tessera's token-loss sum and count (the trainer's reduction).
/// With labels [B, T], T <= the prompt's length, `logits` are the last T positions, as transformers
/// scores them; `language_model_outputs.logits` cover the whole prompt.
struct Blip2GenerationOutput {
  static constexpr const char* kName = "Blip2ForConditionalGenerationModelOutput";
  at::Tensor loss;
  at::Tensor logits;
  PooledOutput vision_outputs;
  PooledOutput qformer_outputs;
  CausalLMOutput language_model_outputs;
  at::Tensor loss_sum;
  at::Tensor num_tokens;

  template <class V>
  void visit_fields(V&& v) const {
    v("loss", loss);
    v("logits", logits);
    v("vision_outputs", vision_outputs);
    v("qformer_outputs", qformer_outputs);
    v("language_model_outputs", language_model_outputs);
    v("loss_sum", loss_sum);
    v("num_tokens", num_tokens);
  }
};

class Blip2ForConditionalGenerationImpl : public nn::Module<Blip2ForConditionalGenerationImpl>,
                                          public ResizableVocabulary {
 public:
  explicit Blip2ForConditionalGenerationImpl(Blip2Options options = {});
  void reset() override;
  void init_weights();
  /// language_projection(Q-Former queries) [B, num_query_tokens, text hidden].
  at::Tensor image_features(const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  /// The LM's input embeddings with the image features in place of the image tokens.
  at::Tensor embed(const at::Tensor& input_ids, const at::Tensor& pixel_values, bool interpolate_pos_encoding = false);
  Blip2GenerationOutput forward(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                                const at::Tensor& attention_mask = {}, const at::Tensor& labels = {},
                                bool output_hidden_states = false, bool interpolate_pos_encoding = false);
  /// Prompt (with its image tokens) followed by the generated ids.
  at::Tensor generate(const at::Tensor& input_ids, const at::Tensor& pixel_values, const at::Tensor& attention_mask,
                      const GenerationOptions& options, std::optional<at::Generator> generator = std::nullopt,
                      bool interpolate_pos_encoding = false);
  void set_gradient_checkpointing(bool on) {
    vision_model->set_gradient_checkpointing(on);
    qformer->set_gradient_checkpointing(on);
    language_model->set_gradient_checkpointing(on);
  }
  /// The language model's (ResizableVocabulary); the image token must stay in the vocabulary.
  void set_vocabulary(const at::Tensor& embed, const at::Tensor& head) override;
  Blip2Options options;
  Blip2VisionModel vision_model{nullptr};
  Blip2QFormerModel qformer{nullptr};
  nn::Linear language_projection{nullptr};
  LlamaForCausalLM language_model{nullptr};
  const at::Tensor& query_tokens() const { return param(query_tokens_); }

 private:
  nn::Slot query_tokens_;
};
TORCH_MODULE(Blip2ForConditionalGeneration);

class Blip2ForImageTextRetrievalImpl : public nn::Module<Blip2ForImageTextRetrievalImpl> {
 public:
  explicit Blip2ForImageTextRetrievalImpl(Blip2Options options = {});
  void reset() override;
  void init_weights();
  /// `input_ids` [B, T] (after num_query_tokens placeholders when image_token_index is set) and
  /// their 0/1 `attention_mask`. ITC (default): logits_per_image [B_img, B_txt]; with
  /// `use_image_text_matching_head`, image i against text i: logits_per_image [B, 2].
  Blip2ImageTextMatchingOutput forward(const at::Tensor& pixel_values, const at::Tensor& input_ids,
                                       const at::Tensor& attention_mask = {},
                                       bool use_image_text_matching_head = false);
  /// ITC image side: normalised vision_projection(queries) [B, Q, image_text_hidden_size].
  at::Tensor image_embeds_for_itc(const at::Tensor& pixel_values);
  /// ITC text side: normalised text_projection(first token) [B, image_text_hidden_size].
  at::Tensor text_embeds_for_itc(const at::Tensor& input_ids, const at::Tensor& attention_mask);
  void set_gradient_checkpointing(bool on) {
    vision_model->set_gradient_checkpointing(on);
    qformer->set_gradient_checkpointing(on);
  }
  Blip2Options options;
  Blip2VisionModel vision_model{nullptr};
  Blip2TextEmbeddings embeddings{nullptr};
  Blip2QFormerModel qformer{nullptr};
  nn::Linear vision_projection{nullptr}, text_projection{nullptr}, itm_head{nullptr};
  const at::Tensor& query_tokens() const { return param(query_tokens_); }

 private:
  /// input_ids / attention_mask without the query placeholders (image_token_index set).
  std::pair<at::Tensor, at::Tensor> text_part(const at::Tensor& input_ids, const at::Tensor& attention_mask) const;
  nn::Slot query_tokens_;
};
TORCH_MODULE(Blip2ForImageTextRetrieval);

}  // namespace tessera::models
