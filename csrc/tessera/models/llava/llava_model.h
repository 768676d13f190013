// LLaVA (Liu et al. 2023, "Visual Instruction Tuning") with the names and outputs of
// transformers' LlavaForConditionalGeneration: a CLIP vision tower run up to the feature layer it
// needs, a projector, and a LLaMA whose input embeddings get the projected image features spliced
// in where the prompt has image tokens (one per feature, several images per sample allowed).
// Checkpoint tree: `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`,
// `language_model.lm_head.*` (transformers 5's in-memory `model.*` layout loads by key alias).
#pragma once
#include "tessera/models/clip/clip_vision.h"
#include "tessera/models/llama/llama_generate.h"
#include "tessera/models/llama/llama_model.h"
#include "tessera/models/llava/llava_options.h"

namespace tessera::models {

class LlavaForConditionalGenerationImpl : public nn::Module<LlavaForConditionalGenerationImpl>,
                                          public ResizableVocabulary {
 public:
  explicit LlavaForConditionalGenerationImpl(LlavaOptions options = {});
  void reset() override;
  void init_weights();
  /// Projected image features [num_images, image_tokens, text hidden].
  at::Tensor image_features(const at::Tensor& pixel_values);
  /// The LM's input embeddings with the image features in place of the image tokens.
  at::Tensor embed(const at::Tensor& input_ids, const at::Tensor& pixel_values);
  CausalLMOutput forward(const at::Tensor& input_ids, const at::Tensor& pixel_values = {},
                         const at::Tensor& attention_mask = {}, const at::Tensor& labels = {},
                         bool output_hidden_states = false);
  /// Prompt (with image tokens) followed by the generated ids.
  at::Tensor generate(const at::Tensor& input_ids, const at::Tensor& pixel_values, const at::Tensor& attention_mask,
                      const GenerationOptions& options, std::optional<at::Generator> generator = std::nullopt);
  void set_gradient_checkpointing(bool on) {
    vision_tower->set_gradient_checkpointing(on);
    language_model->set_gradient_checkpointing(on);
  }
  /// The language model's (ResizableVocabulary); the image token must stay in the vocabulary.
  void set_vocabulary(const at::Tensor& embed, const at::Tensor& head) override;
  LlavaOptions options;
  ClipVisionTransformer vision_tower{nullptr};
  std::shared_ptr<torch::nn::Module> multi_modal_projector;
  LlamaForCausalLM language_model{nullptr};
};
TORCH_MODULE(LlavaForConditionalGeneration);

}  // namespace tessera::models
