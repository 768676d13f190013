// Decoding loop and logits processors (transformers' generation/utils.py and logits_process.py:
// RepetitionPenalty, then Temperature, TopK, TopP when sampling).
#include "tessera/models/llama/llama_generate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <limits>

#include "tessera/nn/attention_mask.h"

namespace tessera::models {

TextGeneration::TextGeneration(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                               GenerationOptions options, std::optional<at::Generator> generator,
                               const at::Tensor& inputs_embeds)
    : lm_(lm), options_(std::move(options)), generator_(std::move(generator)), inputs_embeds_(inputs_embeds),
      cache_(lm.options.num_hidden_layers()) {
  TORCH_CHECK_VALUE(input_ids.defined() && input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
                    "input_ids must be int64 [batch, prompt], got ",
                    input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(options_.max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", options_.max_new_tokens);
  TORCH_CHECK_VALUE(std::isfinite(options_.temperature) && options_.temperature >= 0 &&
                        (!options_.do_sample || options_.temperature > 0),
                    "temperature must be ", options_.do_sample ? "> 0 when sampling" : ">= 0", ", got ",
                    options_.temperature);
  TORCH_CHECK_VALUE(options_.top_k >= 0, "top_k must be >= 0 (0: no top-k filter), got ", options_.top_k);
  TORCH_CHECK_VALUE(options_.top_p > 0 && options_.top_p <= 1, "top_p must be in (0, 1], got ", options_.top_p);
  TORCH_CHECK_VALUE(options_.repetition_penalty > 0, "repetition_penalty must be > 0, got ",
                    options_.repetition_penalty);
  const int64_t B = input_ids.size(0), P = input_ids.size(1), limit = lm.options.max_position_embeddings();
  TORCH_CHECK_VALUE(P + options_.max_new_tokens <= limit || lm.options.rope().rope_type == "dynamic", "a prompt of ",
                    P, " tokens plus max_new_tokens ", options_.max_new_tokens,
                    " exceeds the model's context (max_position_embeddings ", limit, ")");
  mask_ = attention_mask.defined() ? attention_mask.to(at::kLong) : at::ones_like(input_ids);
  TORCH_CHECK_VALUE(mask_.sizes() == input_ids.sizes(), "attention_mask must be ", input_ids.sizes(), " like input_ids, got ",
                    mask_.sizes());
  if (attention_mask.defined()) nn::check_padding_mask(attention_mask);
  sequences_ = input_ids;
  std::vector<int64_t> stops = options_.eos_token_ids.value_or(lm.options.eos_token_ids());
  const int64_t vocab = lm.options.vocab_size();
  for (int64_t id : stops)
    TORCH_CHECK_VALUE(id >= 0 && id < vocab, "eos_token_id ", id, " is not a token of the model (vocab_size ", vocab, ")");
  TORCH_CHECK_VALUE(options_.pad_token_id >= -1 && options_.pad_token_id < vocab, "pad_token_id ", options_.pad_token_id,
                    " is not a token of the model (vocab_size ", vocab, ")");
  eos_ = at::tensor(stops, at::kLong).to(input_ids.device());
  if (options_.pad_token_id < 0) options_.pad_token_id = lm.options.pad_token_id() >= 0 ? lm.options.pad_token_id()
                                                         : (stops.empty() ? 0 : stops[0]);
  unfinished_ = at::ones({B}, input_ids.options().dtype(at::kBool));
  // Positions count real tokens: a left-padded row starts at 0 where its text starts.
  positions_ = (mask_.cumsum(-1) - 1).masked_fill(mask_ == 0, 1);
  if (options_.use_cache) cache_.reserve(P + options_.max_new_tokens);
  previous_direct_ = lm.model->direct_calls;
  lm.model->direct_calls = options_.direct_layer_calls;
  done_ = options_.max_new_tokens == 0;
}

TextGeneration::~TextGeneration() { lm_.model->direct_calls = previous_direct_; }

at::Tensor TextGeneration::logits_step() {
  const bool first = generated_ == 0;
  if (options_.use_cache && !first) {  // one new token per row, against the cache
    at::Tensor pos = positions_.narrow(1, positions_.size(1) - 1, 1) + 1;
    positions_ = at::cat({positions_, pos}, 1);
    return lm_.forward(sequences_.narrow(1, sequences_.size(1) - 1, 1), mask_, pos, {}, {}, false, &cache_, 1).logits;
  }
  if (!first) positions_ = at::cat({positions_, positions_.narrow(1, positions_.size(1) - 1, 1) + 1}, 1);
  at::Tensor embeds = inputs_embeds_;
  if (embeds.defined() && !first) {  // recompute mode: the prompt's embeddings, then the new tokens'
    at::Tensor added = lm_.embed_tokens->forward(sequences_.narrow(1, embeds.size(1), sequences_.size(1) - embeds.size(1)));
    embeds = at::cat({embeds, added.to(embeds.scalar_type())}, 1);
  }
  return lm_.forward(embeds.defined() ? at::Tensor() : sequences_, mask_, positions_, embeds, {}, false,
                     options_.use_cache ? &cache_ : nullptr, 1)
      .logits;
}

at::Tensor TextGeneration::choose(at::Tensor scores) {
  if (options_.repetition_penalty != 1.0) {  // every token seen so far, prompt included
    at::Tensor seen = at::gather(scores, 1, sequences_);
    seen = at::where(seen < 0, seen * options_.repetition_penalty, seen / options_.repetition_penalty);
    scores = scores.scatter(1, sequences_, seen);
  }
  if (!options_.do_sample) return scores.argmax(-1);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  scores = scores / options_.temperature;
  if (options_.top_k > 0) {
    const int64_t k = std::min<int64_t>(options_.top_k, scores.size(-1));
    at::Tensor kth = std::get<0>(at::topk(scores, k, -1)).narrow(-1, k - 1, 1);
    scores = scores.masked_fill(scores < kth, neg_inf);
  }
  if (options_.top_p < 1.0) {  // drop the least likely tokens whose total mass stays within 1 - top_p
    auto [sorted, order] = at::sort(scores, -1, /*descending=*/false);
    at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
    at::Tensor remove = cumulative <= (1 - options_.top_p);
    remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);  // keep at least the most likely
    scores = scores.masked_fill(remove.scatter(-1, order, remove), neg_inf);
  }
  return at::multinomial(scores.softmax(-1), 1, false, generator_).squeeze(-1);
}

at::Tensor TextGeneration::next() {
  if (done_) return {};
  at::NoGradGuard no_grad;
  at::Tensor scores = logits_step().select(1, -1).to(at::kFloat);
  at::Tensor token = choose(scores);
  token = at::where(unfinished_, token, at::full_like(token, options_.pad_token_id));
  sequences_ = at::cat({sequences_, token.unsqueeze(1)}, 1);
  mask_ = at::cat({mask_, at::ones_like(token).unsqueeze(1)}, 1);
  if (eos_.numel() > 0) unfinished_ = unfinished_.logical_and(at::isin(token, eos_).logical_not());
  ++generated_;
  done_ = generated_ >= options_.max_new_tokens || !unfinished_.any().item<bool>();
  return token;
}

at::Tensor generate(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationOptions& options, std::optional<at::Generator> generator,
                    const at::Tensor& inputs_embeds) {
  TextGeneration g(lm, input_ids, attention_mask, options, std::move(generator), inputs_embeds);
  while (!g.done()) g.next();
  return g.sequences();
}

}  // namespace tessera::models
