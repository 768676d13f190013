// CLIP text tower (transformers' CLIPTextEmbeddings + CLIPTextTransformer).
#include "tessera/models/clip/clip_text.h"

#include "tessera/models/clip/clip_layout.h"
#include "tessera/nn/attention_mask.h"

#include <ATen/ATen.h>

namespace tessera::models {

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(ClipTextOptions options_)
    : Module("CLIPTextEmbeddings"), options(std::move(options_)) {
  reset();
}

void ClipTextEmbeddingsImpl::reset() {
  token_embedding = register_module("token_embedding", nn::Embedding(options.vocab_size(), options.hidden_size()));
  position_embedding =
      register_module("position_embedding", nn::Embedding(options.max_position_embeddings(), options.hidden_size()));
}

at::Tensor ClipTextEmbeddingsImpl::forward(const at::Tensor& input_ids) const {
  const int64_t L = input_ids.size(1);
  return token_embedding->forward(input_ids) + position_embedding->weight().narrow(0, 0, L).unsqueeze(0);
}

ClipTextTransformerImpl::ClipTextTransformerImpl(ClipTextOptions options_)
    : Module("CLIPTextTransformer"), options(std::move(options_)) {
  nn::build_then_init(*this);
}

void ClipTextTransformerImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", ClipTextEmbeddings(o));
  encoder = register_module("encoder", clip_encoder(o.hidden_size(), o.num_attention_heads(), o.intermediate_size(),
                                                    o.hidden_act(), o.layer_norm_eps(), o.attention_dropout(),
                                                    o.num_hidden_layers()));
  final_layer_norm =
      register_module("final_layer_norm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
}

void ClipTextTransformerImpl::init_weights() {
  at::NoGradGuard g;
  const double f = options.initializer_factor();
  embeddings->token_embedding->weight().normal_(0, 0.02 * f);
  embeddings->position_embedding->weight().normal_(0, 0.02 * f);
  init_clip_encoder(*encoder, options.hidden_size(), f);
  final_layer_norm->reset_parameters();
}

std::pair<at::Tensor, nn::LayerArgs> ClipTextTransformerImpl::embed(const at::Tensor& input_ids,
                                                                    const at::Tensor& attention_mask) const {
  TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids must be [batch, seq_len], got shape ", input_ids.sizes());
  TORCH_CHECK_TYPE(input_ids.scalar_type() == at::kLong || input_ids.scalar_type() == at::kInt,
                   "input_ids must be int64 (or int32), got ", input_ids.scalar_type());
  const int64_t L = input_ids.size(1);
  TORCH_CHECK_VALUE(L >= 1 && L <= options.max_position_embeddings(), "input_ids has ", L,
                    " tokens; the text model takes 1 to ", options.max_position_embeddings());
  TORCH_CHECK_VALUE(input_ids.size(0) > 0, "input_ids is an empty batch (shape ", input_ids.sizes(), ")");
  const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
  TORCH_CHECK_INDEX(lo >= 0 && hi < options.vocab_size(), "input_ids contain token id ", lo < 0 ? lo : hi,
                    " outside the vocabulary [0, ", options.vocab_size(), ")");
  at::Tensor h = embeddings->forward(input_ids.to(at::kLong));
  nn::LayerArgs args;
  args.causal = true;
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(attention_mask.sizes() == input_ids.sizes(), "attention_mask shape ", attention_mask.sizes(),
                      " does not match input_ids shape ", input_ids.sizes());
    args.mask = nn::padding_mask(attention_mask, h.scalar_type());
  }
  return {h, args};
}

PooledOutput ClipTextTransformerImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                              bool output_hidden_states) {
  auto [h, args] = embed(input_ids, attention_mask);
  nn::EncoderOutput enc = encoder->forward(h, args, output_hidden_states);
  PooledOutput out;
  out.last_hidden_state = final_layer_norm->forward(enc.last_hidden_state);
  // HF: eos_token_id == 2 is the legacy config (pool at the largest id, i.e. EOT in CLIP's
  // vocabulary); otherwise the first occurrence of eos_token_id.
  const at::Tensor ids = input_ids.to(at::kLong);
  at::Tensor eos = options.eos_token_id() == 2 ? ids.argmax(-1) : ids.eq(options.eos_token_id()).to(at::kInt).argmax(-1);
  const int64_t B = ids.size(0), D = out.last_hidden_state.size(2);
  out.pooler_output = out.last_hidden_state.gather(1, eos.to(at::kLong).view({B, 1, 1}).expand({B, 1, D})).squeeze(1);
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

IntermediatesOutput ClipTextTransformerImpl::forward_intermediates(const at::Tensor& input_ids,
                                                                   const at::Tensor& attention_mask,
                                                                   const std::vector<int64_t>& indices, bool norm,
                                                                   bool stop_early) {
  auto [h, args] = embed(input_ids, attention_mask);
  auto [last, picked] = encoder->forward_intermediates(h, indices, args, stop_early);
  IntermediatesOutput out;
  out.last_hidden_state = final_layer_norm->forward(last);
  for (auto& t : picked) out.intermediates.push_back(norm ? final_layer_norm->forward(t) : t);
  return out;
}

at::Tensor ClipTextTransformerImpl::forward_features(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  return forward_intermediates(input_ids, attention_mask, {}).last_hidden_state;
}

}  // namespace tessera::models
