// BLIP-2 stage 1 (LAVIS's Blip2Qformer.forward, BertLMHeadModel) in C++: masks, passes, LM head.
#include "tessera/models/blip2/stage1.h"

#include "tessera/nn/attention_mask.h"

#include "tessera/nn/activation.h"
#include "tessera/nn/init.h"
#include "tessera/nn/norm.h"
#include "tessera/ops/onednn_linear.h"

#include <ATen/ATen.h>

namespace tessera::models {
namespace {

void check_text(const at::Tensor& ids, const at::Tensor& mask) {
  TORCH_CHECK_VALUE(ids.defined() && ids.dim() == 2 && ids.scalar_type() == at::kLong, "input_ids must be int64 [B, T]");
  TORCH_CHECK_VALUE(mask.defined() && mask.sizes() == ids.sizes(), "attention_mask must be [B, T] like input_ids ",
                    ids.sizes(), ", got ", mask.defined() ? mask.sizes() : at::IntArrayRef{});
  nn::check_padding_mask(mask);  // 0/1 only (0.5 was read as 1), a token in every row
}

}  // namespace

Stage1Pass stage1_pass_from_name(const std::string& name) {
  if (name == "itc") return Stage1Pass::itc;
  if (name == "itm") return Stage1Pass::itm;
  TORCH_CHECK_VALUE(name == "itg", "unknown BLIP-2 stage-1 pass '", name, "' (itc, itm, itg)");
  return Stage1Pass::itg;
}

at::Tensor stage1_mask(Stage1Pass pass, int64_t num_queries, const at::Tensor& text_mask) {
  TORCH_CHECK_VALUE(text_mask.defined() && text_mask.dim() == 2, "text_mask must be [B, T], got ",
                    text_mask.defined() ? text_mask.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(num_queries >= 0, "num_queries must be >= 0, got ", num_queries);
  const int64_t B = text_mask.size(0), T = text_mask.size(1), L = num_queries + T;
  auto opts = text_mask.options().dtype(at::kBool);
  at::Tensor real = at::cat({at::ones({B, num_queries}, opts), text_mask.ne(0)}, 1);  // [B, L] real keys
  at::Tensor is_query = at::arange(L, text_mask.options().dtype(at::kLong)) < num_queries;  // [L]
  at::Tensor row_query = is_query.view({L, 1}), col_query = is_query.view({1, L});
  at::Tensor allowed;  // [L, L] before padding
  switch (pass) {
    case Stage1Pass::itm:
      allowed = at::ones({L, L}, opts);
      break;
    case Stage1Pass::itc:  // same modality only
      allowed = row_query.eq(col_query);
      break;
    case Stage1Pass::itg: {  // queries: queries; text: queries and text up to itself
      at::Tensor causal = at::ones({L, L}, opts).tril();
      allowed = at::where(row_query, col_query, col_query.logical_or(causal));
      break;
    }
  }
  return allowed.unsqueeze(0).logical_and(real.unsqueeze(1)).to(at::kLong);
}

BertLMPredictionHeadImpl::BertLMPredictionHeadImpl(Blip2QFormerOptions options_)
    : Module("BertLMPredictionHead"), options(std::move(options_)) {
  reset();
}

void BertLMPredictionHeadImpl::reset() {
  const int64_t H = options.hidden_size();
  const std::vector<std::pair<std::string, std::string>> transform{{"transform", "BertPredictionHeadTransform"}};
  dense = nn::Linear(std::dynamic_pointer_cast<nn::LinearImpl>(
      nn::register_at(*this, "transform.dense", nn::Linear(H, H).ptr(), transform)));
  norm = nn::Norm(std::dynamic_pointer_cast<nn::NormImpl>(nn::register_at(
      *this, "transform.LayerNorm", nn::Norm(H, nn::NormKind::layer_norm, options.layer_norm_eps()).ptr(), transform)));
  bias_ = add_parameter("bias", std::vector<int64_t>{options.vocab_size()});
}

at::Tensor BertLMPredictionHeadImpl::forward(const at::Tensor& states, const at::Tensor& decoder) const {
  at::Tensor h = norm->forward(nn::apply_activation(dense->forward(states), nn::activation_from_name(options.hidden_act())));
  return ops::linear(h, decoder, bias());
}

Blip2ForPretrainingImpl::Blip2ForPretrainingImpl(Blip2Options options_)
    : Module("Blip2ForPretraining"), options(std::move(options_)) {
  options.validate("blip-2 config");
  TORCH_CHECK_VALUE(options.qformer.use_qformer_text_input(), "blip-2 config: stage 1 reads text through the "
                    "Q-Former: set qformer_config.use_qformer_text_input to true");
  nn::build_then_init(*this);
}

void Blip2ForPretrainingImpl::reset() {
  const auto& q = options.qformer;
  const int64_t H = q.hidden_size(), E = options.image_text_hidden_size();
  query_tokens_ = add_parameter("query_tokens", std::vector<int64_t>{1, options.num_query_tokens(), H});
  embeddings = register_module("embeddings", Blip2TextEmbeddings(q));
  qformer = register_module("qformer", Blip2QFormerModel(q));
  vision_projection = register_module("vision_projection", nn::Linear(H, E));
  text_projection = register_module("text_projection", nn::Linear(H, E));
  itm_head = register_module("itm_head", nn::Linear(H, 2));
  lm_head = BertLMPredictionHead(std::dynamic_pointer_cast<BertLMPredictionHeadImpl>(
      nn::register_at(*this, "cls.predictions", BertLMPredictionHead(q).ptr(), {{"cls", "BertOnlyMLMHead"}})));
  temp_ = add_parameter("temp", at::empty({}));
}

void Blip2ForPretrainingImpl::init_weights() {
  at::NoGradGuard g;
  const double std = options.qformer.initializer_range();
  nn::init_linears_and_norms(*this, std);
  embeddings->word_embeddings->weight().normal_(0, std);
  embeddings->word_embeddings->weight()[options.qformer.pad_token_id()].zero_();
  embeddings->position_embeddings->weight().normal_(0, std);
  query_tokens().normal_(0, std);  // LAVIS: N(0, initializer_range)
  lm_head->bias().zero_();
  temp().fill_(0.07);
}

at::Tensor Blip2ForPretrainingImpl::joint_states(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                                                 const at::Tensor& attention_mask, Stage1Pass pass) {
  check_text(input_ids, attention_mask);
  TORCH_CHECK_VALUE(image_embeds.defined() && image_embeds.dim() == 3 && image_embeds.size(0) == input_ids.size(0),
                    "image_embeds must be [B, tokens, width] for the ", input_ids.size(0), " texts, got ",
                    image_embeds.defined() ? image_embeds.sizes() : at::IntArrayRef{});
  const int64_t B = input_ids.size(0), Q = options.num_query_tokens();
  at::Tensor tokens = embeddings->forward(input_ids, query_tokens().expand({B, -1, -1}));
  return qformer->forward(tokens, Q, stage1_mask(pass, Q, attention_mask), image_embeds).last_hidden_state;
}

std::pair<at::Tensor, at::Tensor> Blip2ForPretrainingImpl::itc_features(const at::Tensor& image_embeds,
                                                                        const at::Tensor& input_ids,
                                                                        const at::Tensor& attention_mask) {
  const int64_t Q = options.num_query_tokens();
  at::Tensor h = joint_states(image_embeds, input_ids, attention_mask, Stage1Pass::itc);
  return {nn::l2_normalize(vision_projection->forward(h.narrow(1, 0, Q))),
          nn::l2_normalize(text_projection->forward(h.select(1, Q)))};
}

at::Tensor Blip2ForPretrainingImpl::itm_logits(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                                               const at::Tensor& attention_mask) {
  const int64_t Q = options.num_query_tokens();
  at::Tensor h = joint_states(image_embeds, input_ids, attention_mask, Stage1Pass::itm);
  return itm_head->forward(h.narrow(1, 0, Q)).mean(1);
}

at::Tensor Blip2ForPretrainingImpl::lm_logits(const at::Tensor& states) const {
  return lm_head->forward(states, embeddings->word_embeddings->weight());
}

at::Tensor Blip2ForPretrainingImpl::itg_logits(const at::Tensor& image_embeds, const at::Tensor& input_ids,
                                               const at::Tensor& attention_mask) {
  const int64_t Q = options.num_query_tokens();
  return lm_logits(joint_states(image_embeds, input_ids, attention_mask, Stage1Pass::itg).narrow(1, Q, input_ids.size(1)));
}

std::pair<at::Tensor, at::Tensor> Blip2ForPretrainingImpl::lm_loss(const at::Tensor& image_embeds,
                                                                   const at::Tensor& input_ids,
                                                                   const at::Tensor& attention_mask,
                                                                   int64_t bos_token_id, double label_smoothing) {
  check_text(input_ids, attention_mask);
  TORCH_CHECK_VALUE(bos_token_id >= 0 && bos_token_id < options.qformer.vocab_size(), "bos_token_id ", bos_token_id,
                    " is not in the Q-Former's vocabulary of ", options.qformer.vocab_size());
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing < 1, "label_smoothing must be in [0, 1), got ",
                    label_smoothing);
  at::Tensor ids = input_ids.clone();
  ids.select(1, 0).fill_(bos_token_id);
  const int64_t Q = options.num_query_tokens(), V = options.qformer.vocab_size();
  at::Tensor text = joint_states(image_embeds, ids, attention_mask, Stage1Pass::itg).narrow(1, Q, ids.size(1));
  // Position t predicts token t + 1; padding is ignored.
  at::Tensor target = ids.masked_fill(attention_mask.eq(0), -100).slice(1, 1);
  at::Tensor logits = lm_logits(text.slice(1, 0, ids.size(1) - 1)).to(at::kFloat);
  at::Tensor sum = at::cross_entropy_loss(logits.reshape({-1, V}), target.reshape(-1), {}, at::Reduction::Sum, -100,
                                          label_smoothing);
  return {sum, target.ne(-100).sum()};
}

}  // namespace tessera::models
