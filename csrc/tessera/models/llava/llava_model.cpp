// LLaVA: image features, splicing and the language model (transformers' modeling_llava.py).
#include "tessera/models/llava/llava_model.h"

#include "tessera/models/llama/image_splice.h"
#include "tessera/models/llava/projector.h"
#include "tessera/nn/init.h"

#include <ATen/ATen.h>

namespace tessera::models {

LlavaForConditionalGenerationImpl::LlavaForConditionalGenerationImpl(LlavaOptions options_)
    : Module("LlavaForConditionalGeneration"), options(std::move(options_)) {
  options.validate("llava config");
  nn::build_then_init(*this);
}

void LlavaForConditionalGenerationImpl::reset() {
  vision_tower = register_module("vision_tower", ClipVisionTransformer(options.vision));
  ProjectorSpec spec{options.vision_feature_dim(), options.text.hidden_size(), options.projector_hidden_act(),
                     options.multimodal_projector_bias(), options.projector_num_queries(),
                     options.text.num_attention_heads(), options.projector_config()};
  multi_modal_projector = register_module("multi_modal_projector", make_projector(options.projector_type(), spec));
  language_model = register_module("language_model", LlamaForCausalLM(options.text));
}

void LlavaForConditionalGenerationImpl::init_weights() {
  // The parts as their families initialise them (built under the root's no-init guard); the
  // projector as transformers' LLaVA: normal(text initializer_range) weights, zero biases.
  at::NoGradGuard g;
  dynamic_cast<Projector&>(*multi_modal_projector).init_own_parameters();  // first: see Projector
  vision_tower->init_weights();
  language_model->init_weights();
  nn::init_linears_and_norms(*multi_modal_projector, options.text.initializer_range());
}

void LlavaForConditionalGenerationImpl::set_vocabulary(const at::Tensor& embed, const at::Tensor& head) {
  set_language_model_vocabulary(*language_model, options.text, options.image_token_index(), embed, head);
}

at::Tensor LlavaForConditionalGenerationImpl::image_features(const at::Tensor& pixel_values) {
  // hidden_states[k] (k >= 1) is layer k's output, forward_intermediates' index k - 1.
  std::vector<int64_t> indices;
  for (int64_t l : options.vision_feature_layer()) indices.push_back(l < 0 ? l : l - 1);
  const auto& projector = dynamic_cast<const Projector&>(*multi_modal_projector);
  IntermediatesOutput out = vision_tower->forward_intermediates(pixel_values, indices, projector.reads_normed_features(),
                                                               /*stop_early=*/true);
  at::Tensor feats = out.intermediates.size() == 1 ? out.intermediates[0] : at::cat(out.intermediates, -1);
  if (options.vision_feature_select_strategy() == "default") feats = feats.slice(1, 1);
  return projector.project(feats);
}

at::Tensor LlavaForConditionalGenerationImpl::embed(const at::Tensor& input_ids, const at::Tensor& pixel_values) {
  return splice_image_features(*language_model, input_ids, options.image_token_index(), pixel_values, [&] {
    at::Tensor feats = image_features(pixel_values);
    TORCH_CHECK_VALUE(feats.size(1) == options.image_tokens(), "projector '", options.projector_type(), "' returned ",
                      feats.size(1), " tokens per image; the config says ", options.image_tokens(),
                      " (projector_num_queries, or one per vision feature)");
    return feats;
  });
}

CausalLMOutput LlavaForConditionalGenerationImpl::forward(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                                                          const at::Tensor& attention_mask, const at::Tensor& labels,
                                                          bool output_hidden_states) {
  return language_model->forward({}, attention_mask, {}, embed(input_ids, pixel_values), labels, output_hidden_states);
}

at::Tensor LlavaForConditionalGenerationImpl::generate(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                                                       const at::Tensor& attention_mask,
                                                       const GenerationOptions& options_,
                                                       std::optional<at::Generator> generator) {
  at::NoGradGuard no_grad;
  return models::generate(*language_model, input_ids, attention_mask, options_, std::move(generator),
                          embed(input_ids, pixel_values));
}

}  // namespace tessera::models
