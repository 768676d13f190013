// CLIP text tower (transformers' CLIPTextEmbeddings + CLIPTextTransformer).
#include "tessera/models/clip/clip_text.h"

#include "tessera/models/vit/vision_transformer.h"
#include "tessera/nn/attention_mask.h"

#include <ATen/ATen.h>

namespace tessera::models {

ClipTextEmbeddingsImpl::ClipTextEmbeddingsImpl(ClipTextOptions options_) : options(std::move(options_)) { reset(); }

void ClipTextEmbeddingsImpl::reset() {
  token_embedding = register_module("token_embedding", torch::nn::Embedding(options.vocab_size(), options.hidden_size()));
  position_embedding =
      register_module("position_embedding", torch::nn::Embedding(options.max_position_embeddings(), options.hidden_size()));
}

at::Tensor ClipTextEmbeddingsImpl::forward(const at::Tensor& input_ids) {
  const int64_t L = input_ids.size(1);
  return token_embedding(input_ids) + position_embedding->weight.narrow(0, 0, L).unsqueeze(0);
}

ClipTextTransformerImpl::ClipTextTransformerImpl(ClipTextOptions options_) : options(std::move(options_)) { reset(); }

void ClipTextTransformerImpl::reset() {
  const auto& o = options;
  embeddings = register_module("embeddings", ClipTextEmbeddings(o));
  encoder = register_module(
      "encoder", nn::Encoder(block_options(o.hidden_size(), o.num_attention_heads(), o.intermediate_size(), o.hidden_act(),
                                           o.layer_norm_eps(), o.attention_dropout()),
                             o.num_hidden_layers()));
  final_layer_norm = register_module(
      "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_size()}).eps(o.layer_norm_eps())));
  init_weights();
}

void ClipTextTransformerImpl::init_weights() {
  at::NoGradGuard g;
  const double f = options.initializer_factor();
  embeddings->token_embedding->weight.normal_(0, 0.02 * f);
  embeddings->position_embedding->weight.normal_(0, 0.02 * f);
  init_encoder(*encoder, options.hidden_size(), f);
  final_layer_norm->weight.fill_(1.0);
  final_layer_norm->bias.zero_();
}

PooledOutput ClipTextTransformerImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                              bool output_hidden_states) {
  TORCH_CHECK_VALUE(input_ids.dim() == 2, "input_ids must be [batch, seq_len], got shape ", input_ids.sizes());
  TORCH_CHECK_TYPE(input_ids.scalar_type() == at::kLong || input_ids.scalar_type() == at::kInt,
                   "input_ids must be int64 (or int32), got ", input_ids.scalar_type());
  const int64_t B = input_ids.size(0), L = input_ids.size(1);
  TORCH_CHECK_VALUE(L >= 1 && L <= options.max_position_embeddings(), "input_ids has ", L,
                    " tokens; the text model takes 1 to ", options.max_position_embeddings());
  if (input_ids.numel() > 0) {
    const int64_t lo = input_ids.min().item<int64_t>(), hi = input_ids.max().item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0 && hi < options.vocab_size(), "input_ids contain token id ", lo < 0 ? lo : hi,
                      " outside the vocabulary [0, ", options.vocab_size(), ")");
  }
  at::Tensor ids = input_ids.to(at::kLong);
  at::Tensor h = embeddings(ids);
  nn::AttentionArgs args;
  args.causal = true;
  if (attention_mask.defined()) {
    TORCH_CHECK_VALUE(attention_mask.sizes() == input_ids.sizes(), "attention_mask shape ", attention_mask.sizes(),
                      " does not match input_ids shape ", input_ids.sizes());
    args.mask = nn::padding_mask(attention_mask, h.scalar_type());
  }
  nn::EncoderOutput enc = encoder->forward(h, args, output_hidden_states);
  PooledOutput out;
  out.last_hidden_state = final_layer_norm(enc.last_hidden_state);
  // HF: eos_token_id == 2 is the legacy config (pool at the largest id, i.e. EOT in CLIP's
  // vocabulary); otherwise the first occurrence of eos_token_id.
  at::Tensor eos = options.eos_token_id() == 2 ? ids.argmax(-1) : ids.eq(options.eos_token_id()).to(at::kInt).argmax(-1);
  const int64_t D = out.last_hidden_state.size(2);
  out.pooler_output = out.last_hidden_state.gather(1, eos.to(at::kLong).view({B, 1, 1}).expand({B, 1, D})).squeeze(1);
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

}  // namespace tessera::models
