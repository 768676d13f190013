// BLIP-2's Q-Former (transformers' Blip2QFormerModel, Blip2QFormerLayer, Blip2TextEmbeddings).
#include "tessera/models/blip2/qformer.h"

#include "tessera/nn/attention_mask.h"
#include "tessera/nn/init.h"
#include "tessera/nn/transformer_block.h"

#include <ATen/ATen.h>

namespace tessera::models {
namespace {

// Blip2QFormerLayer's names on the generic block. BERT's attention is a Blip2QFormerAttention
// holding the projections (`attention.{query,key,value}`) and the post-norm output
// (`output.{dense,LayerNorm}`); the text feed-forward exists only with text input.
nn::BlockLayout qformer_layer_layout(bool text_input) {
  nn::BlockLayout l;
  l.class_name = "Blip2QFormerLayer";
  l.attn = "attention";
  l.attn_layout.class_name = "Blip2QFormerAttention";
  l.attn_layout.q = "attention.query";
  l.attn_layout.k = "attention.key";
  l.attn_layout.v = "attention.value";
  l.attn_layout.o = "output.dense";
  l.attn_layout.containers = {{"attention", "Blip2QFormerMultiHeadAttention"}, {"output", "Blip2QFormerSelfOutput"}};
  l.attn_norm = "attention.output.LayerNorm";
  l.cross_attn = "crossattention";
  l.cross_layout = l.attn_layout;
  l.cross_norm = "crossattention.output.LayerNorm";
  if (text_input) {
    l.fc1 = "intermediate.dense";
    l.fc2 = "output.dense";
    l.mlp_norm = "output.LayerNorm";
  } else {
    l.fc1 = l.fc2 = l.mlp_norm = "";
  }
  l.query_fc1 = "intermediate_query.dense";
  l.query_fc2 = "output_query.dense";
  l.query_norm = "output_query.LayerNorm";
  l.containers = {{"intermediate", "Blip2QFormerIntermediate"},
                  {"output", "Blip2QFormerOutput"},
                  {"intermediate_query", "Blip2QFormerIntermediate"},
                  {"output_query", "Blip2QFormerOutput"}};
  return l;
}

}  // namespace

at::Tensor qformer_attention_mask(const at::Tensor& mask, int64_t batch, int64_t length, at::ScalarType dtype,
                                  const std::string& what) {
  if (!mask.defined()) return {};
  TORCH_CHECK_VALUE(mask.dim() == 2 || mask.dim() == 3, what, " must be [batch, ", length, "] or [batch, ", length,
                    ", ", length, "], got ", mask.sizes());
  TORCH_CHECK_VALUE(mask.size(0) == batch && mask.size(-1) == length && (mask.dim() == 2 || mask.size(1) == length),
                    what, " of shape ", mask.sizes(), " does not match ", batch, " sequences of ", length, " tokens");
  if (mask.dim() == 2) {
    nn::check_padding_mask(mask);
    return nn::additive_mask(mask.unsqueeze(1).unsqueeze(2), dtype);
  }
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kBool || mask.eq(0).logical_or(mask.eq(1)).all().item<bool>(), what,
                    " must hold only 0 and 1");
  return nn::additive_mask(mask.unsqueeze(1), dtype);
}

Blip2TextEmbeddingsImpl::Blip2TextEmbeddingsImpl(Blip2QFormerOptions options_)
    : Module("Blip2TextEmbeddings"), options(std::move(options_)) {
  reset();
}

void Blip2TextEmbeddingsImpl::reset() {
  const int64_t H = options.hidden_size();
  word_embeddings = register_module("word_embeddings", nn::Embedding(options.vocab_size(), H, options.pad_token_id()));
  position_embeddings = register_module("position_embeddings", nn::Embedding(options.max_position_embeddings(), H));
}

at::Tensor Blip2TextEmbeddingsImpl::forward(const at::Tensor& input_ids, const at::Tensor& query_embeds) const {
  if (!input_ids.defined()) {
    TORCH_CHECK_VALUE(query_embeds.defined(), "Blip2TextEmbeddings needs input_ids or query_embeds");
    return query_embeds;
  }
  TORCH_CHECK_VALUE(input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong, "input_ids must be int64 [B, T], got ",
                    input_ids.scalar_type(), " ", input_ids.sizes());
  const int64_t T = input_ids.size(1);
  TORCH_CHECK_VALUE(T <= options.max_position_embeddings(), "input_ids hold ", T,
                    " tokens; the Q-Former has max_position_embeddings ", options.max_position_embeddings());
  at::Tensor positions = at::arange(T, input_ids.options()).unsqueeze(0);
  at::Tensor text = word_embeddings->forward(input_ids) + position_embeddings->forward(positions, false);
  if (!query_embeds.defined()) return text;
  TORCH_CHECK_VALUE(query_embeds.dim() == 3 && query_embeds.size(-1) == options.hidden_size(),
                    "query_embeds must be [B, Q, ", options.hidden_size(), "], got ", query_embeds.sizes());
  return at::cat({query_embeds.expand({text.size(0), -1, -1}).to(text.scalar_type()), text}, 1);
}

Blip2QFormerModelImpl::Blip2QFormerModelImpl(Blip2QFormerOptions options_)
    : Module("Blip2QFormerModel"), options(std::move(options_)) {
  options.validate("qformer_config");
  nn::build_then_init(*this);
}

void Blip2QFormerModelImpl::reset() {
  const auto& o = options;
  layernorm = register_module("layernorm", nn::Norm(o.hidden_size(), nn::NormKind::layer_norm, o.layer_norm_eps()));
  const nn::BlockLayout layout = qformer_layer_layout(o.use_qformer_text_input());
  auto block = nn::TransformerBlockOptions(o.hidden_size(), o.num_attention_heads(), o.intermediate_size())
                   .act(nn::activation_from_name(o.hidden_act()))
                   .norm_eps(o.layer_norm_eps())
                   .pre_norm(false)
                   .query_ffn(true)
                   .attention_dropout(o.attention_probs_dropout_prob())
                   .hidden_dropout(o.hidden_dropout_prob());
  encoder = register_module(
      "encoder", nn::Encoder(
                     o.num_hidden_layers(),
                     [o, block, layout](int64_t i) {
                       auto b = block;
                       b.cross_attention_dim(i % o.cross_attention_frequency() == 0 ? o.encoder_hidden_size() : 0);
                       return nn::TransformerBlock(b, layout).ptr();
                     },
                     "layer", "Blip2QFormerEncoder"));
}

void Blip2QFormerModelImpl::init_weights() { nn::init_linears_and_norms(*this, options.initializer_range()); }

PooledOutput Blip2QFormerModelImpl::forward(const at::Tensor& query_embeds_in, int64_t query_length,
                                            const at::Tensor& attention_mask, const at::Tensor& encoder_hidden_states,
                                            const at::Tensor& encoder_attention_mask, bool output_hidden_states) {
  const auto& o = options;
  TORCH_CHECK_VALUE(query_embeds_in.defined() && query_embeds_in.dim() == 3 && query_embeds_in.size(2) == o.hidden_size()
                        && query_embeds_in.size(1) > 0,
                    "query_embeds must be [batch, tokens >= 1, ", o.hidden_size(), "], got ",
                    query_embeds_in.defined() ? query_embeds_in.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(query_length >= -1, "query_length must be -1 (every token a query) or a count, got ", query_length);
  // As transformers, the Q-Former runs in its own dtype whatever its inputs' (fp64 or bf16 features
  // failed inside ATen with "mixed dtype").
  const at::Tensor query_embeds = query_embeds_in.to(layernorm->weight().scalar_type());
  const int64_t B = query_embeds.size(0), L = query_embeds.size(1);
  const int64_t nq = query_length < 0 ? L : query_length;
  TORCH_CHECK_VALUE(nq <= L, "query_length ", nq, " exceeds the ", L, " tokens of query_embeds");
  TORCH_CHECK_VALUE(nq == L || o.use_qformer_text_input(), "query_embeds hold ", L - nq,
                    " text tokens after the ", nq, " queries, but this Q-Former has no text input "
                    "(use_qformer_text_input is false)");
  nn::LayerArgs args;
  args.query_length = nq;
  args.mask = qformer_attention_mask(attention_mask, B, L, query_embeds.scalar_type(), "attention_mask");
  if (nq > 0) {
    TORCH_CHECK_VALUE(encoder_hidden_states.defined(), "the Q-Former's queries cross-attend to the image: pass "
                      "encoder_hidden_states [batch, tokens, ", o.encoder_hidden_size(), "]");
    TORCH_CHECK_VALUE(encoder_hidden_states.dim() == 3 && encoder_hidden_states.size(2) == o.encoder_hidden_size(),
                      "encoder_hidden_states must be [batch, tokens, encoder_hidden_size=", o.encoder_hidden_size(),
                      "], got ", encoder_hidden_states.sizes());
    TORCH_CHECK_VALUE(encoder_hidden_states.size(0) == B, "encoder_hidden_states hold ",
                      encoder_hidden_states.size(0), " images for ", B, " query sequences");
    TORCH_CHECK_VALUE(encoder_hidden_states.size(1) > 0, "encoder_hidden_states hold no image token ",
                      encoder_hidden_states.sizes(), ": the queries would attend to nothing");
    args.context = encoder_hidden_states.to(query_embeds.scalar_type());
    const int64_t S = encoder_hidden_states.size(1);
    if (encoder_attention_mask.defined()) {
      TORCH_CHECK_VALUE(encoder_attention_mask.dim() == 2, "encoder_attention_mask must be [batch, ", S, "], got ",
                        encoder_attention_mask.sizes());
      args.context_mask = qformer_attention_mask(encoder_attention_mask, B, S, query_embeds.scalar_type(),
                                                 "encoder_attention_mask");
    }
  }
  at::Tensor h = at::dropout(layernorm->forward(query_embeds), o.hidden_dropout_prob(), is_training());
  nn::EncoderOutput enc = encoder->forward(h, args, output_hidden_states);
  PooledOutput out;
  out.last_hidden_state = enc.last_hidden_state;
  out.pooler_output = enc.last_hidden_state.select(1, 0);
  out.hidden_states = std::move(enc.hidden_states);
  return out;
}

}  // namespace tessera::models
