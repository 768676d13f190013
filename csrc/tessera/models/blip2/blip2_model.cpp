// BLIP-2's heads (transformers' Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval).
#include "tessera/models/blip2/blip2_model.h"

#include "tessera/models/llama/image_splice.h"
#include "tessera/nn/init.h"
#include "tessera/nn/norm.h"

#include <ATen/ATen.h>

#include <tuple>

namespace tessera::models {
namespace {

// LAVIS draws the queries from N(0, initializer_range); transformers zero-fills them, which leaves
// every query identical (and identically updated) when training from scratch.
void init_queries(const at::Tensor& queries, double std) { queries.normal_(0, std); }

// A head reading the Q-Former's states: they come in the Q-Former's dtype, fp32 beside fp16 parts
// when loaded as transformers' _keep_in_fp32_modules keeps them, and go on in the head's.
at::Tensor project(nn::Linear& head, const at::Tensor& states) {
  return head->forward(states.to(head->weight().scalar_type()));
}

}  // namespace

std::pair<PooledOutput, PooledOutput> blip2_query_output(Blip2VisionModelImpl& vision, Blip2QFormerModelImpl& qformer,
                                                         const at::Tensor& query_tokens, const at::Tensor& pixel_values,
                                                         bool interpolate_pos_encoding) {
  PooledOutput tower = vision.forward(pixel_values, false, interpolate_pos_encoding);
  const at::Tensor& image = tower.last_hidden_state;
  PooledOutput queries = qformer.forward(query_tokens.expand({image.size(0), -1, -1}), -1, {}, image);
  return {std::move(tower), std::move(queries)};
}

Blip2ForConditionalGenerationImpl::Blip2ForConditionalGenerationImpl(Blip2Options options_)
    : Module("Blip2ForConditionalGeneration"), options(std::move(options_)) {
  options.validate("blip-2 config");
  TORCH_CHECK_VALUE(options.text.has_value(), "blip-2 config: Blip2ForConditionalGeneration needs a LLaMA "
                    "text_config (model_type 'llama'); tessera has no other language model");
  TORCH_CHECK_VALUE(options.image_token_index() >= 0, "blip-2 config: Blip2ForConditionalGeneration needs "
                    "image_token_index (the prompt's placeholder for each query output)");
  nn::build_then_init(*this);
}

void Blip2ForConditionalGenerationImpl::reset() {
  const auto& o = options;
  vision_model = register_module("vision_model", Blip2VisionModel(o.vision));
  query_tokens_ = add_parameter("query_tokens", std::vector<int64_t>{1, o.num_query_tokens(), o.qformer.hidden_size()});
  qformer = register_module("qformer", Blip2QFormerModel(o.qformer));
  language_projection = register_module("language_projection", nn::Linear(o.qformer.hidden_size(), o.text->hidden_size()));
  language_model = register_module("language_model", LlamaForCausalLM(*o.text));
}

void Blip2ForConditionalGenerationImpl::init_weights() {
  at::NoGradGuard g;
  vision_model->init_weights();
  qformer->init_weights();
  language_model->init_weights();
  language_projection->weight().normal_(0, options.initializer_range());
  language_projection->bias().zero_();
  init_queries(query_tokens(), options.initializer_range());
}

void Blip2ForConditionalGenerationImpl::set_vocabulary(const at::Tensor& embed, const at::Tensor& head) {
  set_language_model_vocabulary(*language_model, *options.text, options.image_token_index(), embed, head);
}

at::Tensor Blip2ForConditionalGenerationImpl::image_features(const at::Tensor& pixel_values,
                                                             bool interpolate_pos_encoding) {
  return project(language_projection, blip2_query_output(*vision_model, *qformer, query_tokens(), pixel_values,
                                                        interpolate_pos_encoding).second.last_hidden_state);
}

at::Tensor Blip2ForConditionalGenerationImpl::embed(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                                                    bool interpolate_pos_encoding) {
  return splice_image_features(*language_model, input_ids, options.image_token_index(), pixel_values,
                               [&] { return image_features(pixel_values, interpolate_pos_encoding); });
}

Blip2GenerationOutput Blip2ForConditionalGenerationImpl::forward(const at::Tensor& input_ids,
                                                                 const at::Tensor& pixel_values,
                                                                 const at::Tensor& attention_mask,
                                                                 const at::Tensor& labels, bool output_hidden_states,
                                                                 bool interpolate_pos_encoding) {
  // image_features(), keeping each part's outputs. output_hidden_states is the LM's alone, as in
  // transformers (the tower's are vision_model's own output_hidden_states).
  Blip2GenerationOutput out;
  at::Tensor embeds = splice_image_features(*language_model, input_ids, options.image_token_index(), pixel_values, [&] {
    std::tie(out.vision_outputs, out.qformer_outputs) =
        blip2_query_output(*vision_model, *qformer, query_tokens(), pixel_values, interpolate_pos_encoding);
    return project(language_projection, out.qformer_outputs.last_hidden_state);
  });
  out.language_model_outputs = language_model->forward({}, attention_mask, {}, embeds, {}, output_hidden_states);
  out.logits = out.language_model_outputs.logits;
  if (labels.defined()) {
    const int64_t L = out.logits.size(1);
    TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(1) >= 1 && labels.size(1) <= L, "labels must be [batch, T] "
                      "with 1 <= T <= the prompt's ", L, " tokens (the last T positions are scored, as transformers "
                      "does), got ", labels.sizes());
    out.logits = out.logits.slice(1, L - labels.size(1));
    std::tie(out.loss_sum, out.num_tokens) = causal_lm_loss(out.logits, labels);
    out.loss = out.loss_sum / out.num_tokens;
  }
  return out;
}

at::Tensor Blip2ForConditionalGenerationImpl::generate(const at::Tensor& input_ids, const at::Tensor& pixel_values,
                                                       const at::Tensor& attention_mask,
                                                       const GenerationOptions& generation,
                                                       std::optional<at::Generator> generator,
                                                       bool interpolate_pos_encoding) {
  at::NoGradGuard no_grad;
  return models::generate(*language_model, input_ids, attention_mask, generation, std::move(generator),
                          embed(input_ids, pixel_values, interpolate_pos_encoding));
}

Blip2ForImageTextRetrievalImpl::Blip2ForImageTextRetrievalImpl(Blip2Options options_)
    : Module("Blip2ForImageTextRetrieval"), options(std::move(options_)) {
  options.validate("blip-2 config");
  TORCH_CHECK_VALUE(options.qformer.use_qformer_text_input(), "blip-2 config: Blip2ForImageTextRetrieval reads text "
                    "through the Q-Former: set qformer_config.use_qformer_text_input to true");
  nn::build_then_init(*this);
}

void Blip2ForImageTextRetrievalImpl::reset() {
  const auto& o = options;
  const int64_t H = o.qformer.hidden_size(), E = o.image_text_hidden_size();
  vision_model = register_module("vision_model", Blip2VisionModel(o.vision));
  query_tokens_ = add_parameter("query_tokens", std::vector<int64_t>{1, o.num_query_tokens(), H});
  embeddings = register_module("embeddings", Blip2TextEmbeddings(o.qformer));
  qformer = register_module("qformer", Blip2QFormerModel(o.qformer));
  vision_projection = register_module("vision_projection", nn::Linear(H, E));
  text_projection = register_module("text_projection", nn::Linear(H, E));
  itm_head = register_module("itm_head", nn::Linear(H, 2));
}

void Blip2ForImageTextRetrievalImpl::init_weights() {
  at::NoGradGuard g;
  const double std = options.initializer_range();
  vision_model->init_weights();
  qformer->init_weights();
  for (auto* lin : {vision_projection.get(), text_projection.get(), itm_head.get()}) {
    lin->weight().normal_(0, std);
    lin->bias().zero_();
  }
  const int64_t pad = options.qformer.pad_token_id();
  embeddings->word_embeddings->weight().normal_(0, std);
  embeddings->word_embeddings->weight()[pad].zero_();
  embeddings->position_embeddings->weight().normal_(0, std);
  init_queries(query_tokens(), std);
}

std::pair<at::Tensor, at::Tensor> Blip2ForImageTextRetrievalImpl::text_part(const at::Tensor& ids,
                                                                            const at::Tensor& attention_mask) const {
  TORCH_CHECK_VALUE(ids.defined() && ids.dim() == 2 &&
                        (ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt) && ids.size(1) >= 1,
                    "input_ids must be int64 or int32 [B, T >= 1] (the text feature is its first token's)");
  const at::Tensor input_ids = ids.to(at::kLong);  // int32 ids, as transformers' embedding takes them
  TORCH_CHECK_VALUE(!attention_mask.defined() || attention_mask.sizes() == input_ids.sizes(), "attention_mask ",
                    attention_mask.defined() ? attention_mask.sizes() : at::IntArrayRef{}, " does not match input_ids ",
                    input_ids.sizes());
  if (options.image_token_index() < 0) return {input_ids, attention_mask};
  // The prompt starts with one placeholder per query, which the text side does not read.
  const int64_t Q = options.num_query_tokens();
  TORCH_CHECK_VALUE(input_ids.size(1) > Q, "input_ids of length ", input_ids.size(1), " must start with ", Q,
                    " image tokens (image_token_index ", options.image_token_index(), ") before the text");
  return {input_ids.slice(1, Q), attention_mask.defined() ? attention_mask.slice(1, Q) : attention_mask};
}

at::Tensor Blip2ForImageTextRetrievalImpl::image_embeds_for_itc(const at::Tensor& pixel_values) {
  at::Tensor q = blip2_query_output(*vision_model, *qformer, query_tokens(), pixel_values).second.last_hidden_state;
  return nn::l2_normalize(project(vision_projection, q));
}

at::Tensor Blip2ForImageTextRetrievalImpl::text_embeds_for_itc(const at::Tensor& input_ids,
                                                               const at::Tensor& attention_mask) {
  auto [ids, mask] = text_part(input_ids, attention_mask);
  at::Tensor states = qformer->forward(embeddings->forward(ids), 0, mask).last_hidden_state;
  return nn::l2_normalize(project(text_projection, states.select(1, 0)));
}

Blip2ImageTextMatchingOutput Blip2ForImageTextRetrievalImpl::forward(const at::Tensor& pixel_values,
                                                                    const at::Tensor& input_ids,
                                                                    const at::Tensor& attention_mask,
                                                                    bool use_image_text_matching_head) {
  Blip2ImageTextMatchingOutput out;
  if (!use_image_text_matching_head) {
    out.image_embeds = image_embeds_for_itc(pixel_values);                  // [Bi, Q, E]
    out.text_embeds = text_embeds_for_itc(input_ids, attention_mask);       // [Bt, E]
    out.logits_per_image = std::get<0>(at::matmul(out.image_embeds, out.text_embeds.t()).max(1));  // [Bi, Bt]
    out.logits_per_text = out.logits_per_image.t();
    return out;
  }
  auto [ids, _] = text_part(input_ids, attention_mask);
  at::Tensor image = vision_model->forward(pixel_values).last_hidden_state;
  TORCH_CHECK_VALUE(image.size(0) == ids.size(0), "image-text matching pairs image i with text i: got ",
                    image.size(0), " images and ", ids.size(0), " texts");
  const int64_t Q = options.num_query_tokens();
  // The mask covers [queries; text]: the prompt's placeholders, or ones put before the text's mask.
  at::Tensor mask = attention_mask;
  if (mask.defined() && options.image_token_index() < 0)
    mask = at::cat({at::ones({mask.size(0), Q}, mask.options()), mask}, 1);
  at::Tensor tokens = embeddings->forward(ids, query_tokens().expand({ids.size(0), -1, -1}));
  at::Tensor states = qformer->forward(tokens, Q, mask, image).last_hidden_state.to(itm_head->weight().scalar_type());
  out.logits_per_image = itm_head->forward(states.narrow(1, 0, Q)).mean(1);
  out.logits_per_text = out.logits_per_image.t();
  out.text_embeds = states;
  out.image_embeds = image;
  return out;
}

}  // namespace tessera::models
