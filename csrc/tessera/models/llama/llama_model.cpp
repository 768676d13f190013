// LlamaModel and LlamaForCausalLM (transformers' modeling_llama.py) on the generic block.
#include "tessera/models/llama/llama_model.h"

#include "tessera/models/llama/llama_layout.h"
#include "tessera/nn/attention_mask.h"
#include "tessera/nn/init.h"
#include "tessera/nn/rotary.h"
#include "tessera/nn/transformer_block.h"
#include "tessera/ops/decode_linear.h"
#include "tessera/ops/linear_fp32_out.h"
#include "tessera/ops/onednn_linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

namespace tessera::models {

std::pair<at::Tensor, at::Tensor> causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK_VALUE(labels.scalar_type() == at::kLong, "labels must be int64 token ids, got ", labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 2 && labels.size(0) == logits.size(0) && labels.size(1) == logits.size(1),
                    "labels must be [", logits.size(0), ", ", logits.size(1), "] like input_ids, got ", labels.sizes());
  const int64_t V = logits.size(-1);
  // Position t predicts token t + 1; the last position has no target.
  at::Tensor target = at::constant_pad_nd(labels, {0, 1}, -100).slice(1, 1);
  at::Tensor valid = target != -100;
  TORCH_CHECK_VALUE(((target >= 0).logical_and(target < V)).logical_or(valid.logical_not()).all().item<bool>(),
                    "labels must be token ids in [0, ", V, ") or -100 (ignored)");
  at::Tensor sum = at::cross_entropy_loss(logits.to(at::kFloat).reshape({-1, V}), target.reshape(-1), {},
                                          at::Reduction::Sum, -100);
  return {sum, valid.sum()};
}

std::pair<at::Tensor, std::vector<at::Tensor>> LlamaForCausalLMImpl::decode(
    const at::Tensor& input_ids, const at::Tensor& attention_mask, const at::Tensor& position_ids,
    const at::Tensor& inputs_embeds, bool output_hidden_states, nn::KVCache* cache) {
  TORCH_CHECK_VALUE(input_ids.defined() != inputs_embeds.defined(), "give exactly one of input_ids and inputs_embeds");
  // A cached decoding step feeds back the model's own ids and mask, checked when generation began.
  const bool decoding_step = cache && cache->seq_len() > 0;
  at::Tensor h;
  if (inputs_embeds.defined()) {
    TORCH_CHECK_VALUE(inputs_embeds.dim() == 3 && inputs_embeds.size(2) == options.hidden_size(),
                      "inputs_embeds must be [B, L, ", options.hidden_size(), "], got ", inputs_embeds.sizes());
    // An integer embedding was accepted and new tokens' embeddings were cast down to it.
    const at::ScalarType table = embed_tokens->weight().scalar_type();
    TORCH_CHECK_TYPE(inputs_embeds.scalar_type() == table || (at::isFloatingType(inputs_embeds.scalar_type()) &&
                                                              at::autocast::is_autocast_enabled(inputs_embeds.device().type())),
                     "inputs_embeds must have the embedding table's dtype ", table, ", got ",
                     inputs_embeds.scalar_type());
    h = inputs_embeds;
  } else {
    TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids must be [B, L], got ", input_ids.sizes());
    TORCH_CHECK_VALUE(input_ids.scalar_type() == at::kLong, "input_ids must be int64, got ", input_ids.scalar_type());
    h = embed_tokens->forward(input_ids, /*check_ids=*/!decoding_step);
  }
  const int64_t B = h.size(0), L = h.size(1), past = cache ? cache->seq_len() : 0;
  TORCH_CHECK_VALUE(past + L <= options.max_position_embeddings() || options.rope().rope_type == "dynamic",
                    past + L, " positions exceed max_position_embeddings ", options.max_position_embeddings());
  at::Tensor positions = position_ids.defined()
                             ? position_ids
                             : at::arange(past, past + L, at::TensorOptions().dtype(at::kLong).device(h.device()))
                                   .unsqueeze(0)
                                   .expand({B, L});
  TORCH_CHECK_VALUE(positions.dim() == 2 && positions.size(0) == B && positions.size(1) == L,
                    "position_ids must be [", B, ", ", L, "], got ", positions.sizes());
  const int64_t seq_len = options.rope().rope_type == "dynamic" ? positions.max().item<int64_t>() + 1 : 0;
  at::Tensor inv_freq = nn::rope_inv_freq(options.rope(), options.dim_per_head(), options.max_position_embeddings(),
                                          seq_len, h.device());
  nn::LayerArgs args;
  std::tie(args.rope_cos, args.rope_sin) = nn::rotary_tables(positions, inv_freq, h.scalar_type());
  args.causal = true;
  args.cache = cache;
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(attention_mask.dim() == 2 && attention_mask.size(0) == B && attention_mask.size(1) == past + L,
                      "attention_mask must be [", B, ", ", past + L, "] (cached + new positions), got ",
                      attention_mask.sizes());
    if (!decoding_step) nn::check_padding_mask(attention_mask);
    if (!attention_mask.to(at::kBool).all().item<bool>()) args.mask = nn::padding_mask(attention_mask, h.scalar_type());
  }
  nn::EncoderOutput enc = model->forward(h, args, output_hidden_states);
  at::Tensor last = norm->forward(enc.last_hidden_state);
  if (output_hidden_states) enc.hidden_states.back() = last;  // transformers: the last one normed
  return {last, std::move(enc.hidden_states)};
}

// ---- LlamaForCausalLM ---------------------------------------------------------------------------
LlamaForCausalLMImpl::LlamaForCausalLMImpl(LlamaOptions options_)
    : Module("LlamaForCausalLM"), options(std::move(options_)) {
  options.validate("llama config");
  nn::build_then_init(*this);
}

void LlamaForCausalLMImpl::reset() {
  const auto& o = options;
  auto block = llama_block_options(o.hidden_size(), o.num_attention_heads(), o.kv_heads(), o.intermediate_size(),
                                   o.rms_norm_eps(), o.attention_bias(), o.mlp_bias())
                   .head_dim(o.dim_per_head())
                   .attention_dropout(o.attention_dropout());
  const nn::BlockLayout layout = llama_layer_layout();
  model = register_module("model", nn::Encoder(
                                       o.num_hidden_layers(),
                                       [block, layout](int64_t) { return nn::TransformerBlock(block, layout).ptr(); },
                                       "layers", "LlamaModel"));
  embed_tokens = nn::Embedding(std::dynamic_pointer_cast<nn::EmbeddingImpl>(nn::register_at(
      *this, "model.embed_tokens", nn::Embedding(o.vocab_size(), o.hidden_size(), o.pad_token_id()).ptr())));
  norm = nn::Norm(std::dynamic_pointer_cast<nn::NormImpl>(nn::register_at(
      *this, "model.norm", nn::Norm(o.hidden_size(), nn::NormKind::rms_norm, o.rms_norm_eps(), false).ptr())));
  lm_head = o.tie_word_embeddings() ? nn::Linear{nullptr}
                                    : register_module("lm_head", nn::Linear(o.hidden_size(), o.vocab_size(), false));
}

void LlamaForCausalLMImpl::init_weights() {
  at::NoGradGuard g;
  const double std = options.initializer_range();
  nn::init_linears_and_norms(*this, std);
  embed_tokens->weight().normal_(0, std);
  if (options.pad_token_id() >= 0) embed_tokens->weight()[options.pad_token_id()].zero_();
}

void LlamaForCausalLMImpl::set_vocabulary(const at::Tensor& embed, const at::Tensor& head) {
  const at::Tensor& old = embed_tokens->weight();
  const int64_t n = embed.defined() && embed.dim() == 2 ? embed.size(0) : -1;
  auto check = [&](const at::Tensor& t, const at::Tensor& like, const char* what) {
    TORCH_CHECK_VALUE(t.defined() && t.dim() == 2 && t.size(0) == n && t.size(1) == like.size(1) && n > 0, what,
                      ": expected [vocab_size, ", like.size(1), "] with the embedding's vocab_size, got ",
                      t.defined() ? t.sizes() : c10::IntArrayRef{});
    TORCH_CHECK_VALUE(t.scalar_type() == like.scalar_type() && t.device() == like.device(), what, ": expected ",
                      like.scalar_type(), " on ", like.device(), ", got ", t.scalar_type(), " on ", t.device());
  };
  check(embed, old, "embed_tokens");
  TORCH_CHECK_VALUE(options.pad_token_id() < n, "pad_token_id ", options.pad_token_id(),
                    " would be past the end of a vocabulary of ", n, " tokens; keep it, or build the model with "
                    "another pad_token_id");
  TORCH_CHECK_VALUE(lm_head || !head.defined(), "lm_head: the embeddings are tied, so there is no head to resize");
  if (lm_head) {
    check(head, lm_head->weight(), "lm_head");
    TORCH_CHECK_VALUE(!lm_head->has_lora(), "lm_head holds a LoRA adapter sized for ", lm_head->out_features,
                      " tokens: resize the vocabulary before adding adapters");
  }
  at::NoGradGuard no_grad;
  old.set_data(embed);
  embed_tokens->num_embeddings = n;
  if (lm_head) {
    lm_head->weight().set_data(head);
    lm_head->out_features = n;
  }
  options.vocab_size(n);
}

void set_language_model_vocabulary(LlamaForCausalLMImpl& lm, LlamaOptions& parent_copy, int64_t image_token_index,
                                   const at::Tensor& embed, const at::Tensor& head) {
  const int64_t n = embed.dim() == 2 ? embed.size(0) : 0;
  TORCH_CHECK_VALUE(image_token_index < n, "image_token_index ", image_token_index,
                    " would be past the end of a vocabulary of ", n, " tokens");
  lm.set_vocabulary(embed, head);
  parent_copy = lm.options;
}

const at::Tensor& LlamaForCausalLMImpl::output_embeddings() const {
  return lm_head ? lm_head->weight() : embed_tokens->weight();
}

CausalLMOutput LlamaForCausalLMImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                             const at::Tensor& position_ids, const at::Tensor& inputs_embeds,
                                             const at::Tensor& labels, bool output_hidden_states, nn::KVCache* cache,
                                             int64_t logits_to_keep) {
  auto [h, hidden] = decode(input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states, cache);
  if (logits_to_keep > 0 && logits_to_keep < h.size(1)) h = h.slice(1, h.size(1) - logits_to_keep);
  CausalLMOutput out;
  const at::Tensor& head = output_embeddings();
  // Decoding: logits accumulated and returned in fp32 so that greedy picks and beam scores are not
  // decided by bf16 rounding (the CPU decoding kernel, int8 if the head has it; on CUDA a GEMM that
  // writes fp32). Otherwise the head module itself runs, its LoRA adapter included.
  std::optional<at::Tensor> decoded;
  if (cache && lm_head) decoded = lm_head->decode(h, at::kFloat);
  else if (cache && ops::decode_linear_applies(h, head)) decoded = ops::decode_linear(h, head, {}, at::kFloat);
  else if (cache) decoded = ops::cuda_linear_fp32_out(h, head, {});
  out.logits = decoded ? *decoded : lm_head ? lm_head->forward(h) : ops::linear(h, head);
  out.hidden_states = std::move(hidden);
  if (labels.defined()) {
    std::tie(out.loss_sum, out.num_tokens) = causal_lm_loss(out.logits, labels);
    out.loss = out.loss_sum / out.num_tokens;
  }
  return out;
}

}  // namespace tessera::models
