// Decoding loop (transformers' generation/utils.py): the KV cache, left padding, stop ids; the
// logits processors it applies are in logits_processors.cpp.
#include "tessera/models/llama/llama_generate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tessera/nn/attention_mask.h"
#include "tessera/ops/decode_argmax.h"

namespace tessera::models {

namespace {

// The token rules' ids are tokens of the model (transformers fails on them at the first step).
void check_token_rules(const GenerationOptions& o, int64_t vocab) {
  const auto check = [&](const std::vector<int64_t>& ids, const char* name) {
    TORCH_CHECK_VALUE(!ids.empty(), name, ": a sequence is empty");
    for (int64_t id : ids)
      TORCH_CHECK_VALUE(id >= 0 && id < vocab, name, ": ", id, " is not a token of the model (vocab_size ", vocab, ")");
  };
  for (const auto& [ids, bias] : o.sequence_bias) {
    check(ids, "sequence_bias");
    TORCH_CHECK_VALUE(!std::isnan(bias), "sequence_bias: the bias of a sequence is NaN");
  }
  for (const auto& ids : o.bad_words_ids) check(ids, "bad_words_ids");
  if (!o.forced_eos_token_ids.empty()) check(o.forced_eos_token_ids, "forced_eos_token_id");
  if (o.forced_bos_token_id != -1) check({o.forced_bos_token_id}, "forced_bos_token_id");
  if (o.exponential_decay_length_penalty)
    TORCH_CHECK_VALUE(std::isfinite(o.exponential_decay_length_penalty->second),
                      "exponential_decay_length_penalty: the factor must be finite");
}

// transformers keeps a lone stop id out of bad_words_ids, so that stopping stays possible.
void keep_stops_allowed(GenerationOptions& o, const std::vector<int64_t>& stops) {
  auto& bad = o.bad_words_ids;
  bad.erase(std::remove_if(bad.begin(), bad.end(), [&](const std::vector<int64_t>& ids) {
              return ids.size() == 1 && std::find(stops.begin(), stops.end(), ids[0]) != stops.end();
            }), bad.end());
}

}  // namespace

GenerationStart start_generation(const LlamaForCausalLMImpl& lm, const at::Tensor& input_ids,
                                 const at::Tensor& attention_mask, GenerationOptions o, const at::Tensor& inputs_embeds) {
  TORCH_CHECK_VALUE(input_ids.defined() && input_ids.dim() == 2 && input_ids.scalar_type() == at::kLong,
                    "input_ids must be int64 [batch, prompt], got ",
                    input_ids.defined() ? c10::toString(input_ids.scalar_type()) : "none", " ",
                    input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(input_ids.size(0) > 0 && input_ids.size(1) > 0, "input_ids ", input_ids.sizes(),
                    input_ids.size(0) > 0 ? " has an empty prompt: generation continues a prompt of at least "
                                            "one token (start it with the bos id)"
                                          : " has no rows: nothing to generate");
  if (inputs_embeds.defined())  // they stand for the prompt's ids, which the generated ids extend
    TORCH_CHECK_VALUE(inputs_embeds.dim() == 3 && inputs_embeds.size(0) == input_ids.size(0) &&
                          inputs_embeds.size(1) == input_ids.size(1),
                      "inputs_embeds must be [", input_ids.size(0), ", ", input_ids.size(1), ", hidden] like the ",
                      "prompt's input_ids ", input_ids.sizes(), ", got ", inputs_embeds.sizes());
  TORCH_CHECK_VALUE(o.max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", o.max_new_tokens);
  TORCH_CHECK_VALUE(o.min_new_tokens >= 0, "min_new_tokens must be >= 0, got ", o.min_new_tokens);
  TORCH_CHECK_VALUE(std::isfinite(o.temperature) && o.temperature >= 0 && (!o.do_sample || o.temperature > 0),
                    "temperature must be ", o.do_sample ? "> 0 when sampling" : ">= 0", ", got ", o.temperature);
  // Scores are divided by these in fp32: below ~3e-39 the quotient is inf and sampling draws from NaN.
  const auto fp32_inverse_finite = [](double v) { return std::isfinite(static_cast<float>(1.0 / v)); };
  TORCH_CHECK_VALUE(!o.do_sample || fp32_inverse_finite(o.temperature), "temperature ", o.temperature,
                    " is too small for fp32 scores (1 / temperature overflows); use greedy decoding (do_sample=False)");
  TORCH_CHECK_VALUE(o.top_k >= 0, "top_k must be >= 0 (0: no top-k filter), got ", o.top_k);
  TORCH_CHECK_VALUE(o.top_p > 0 && o.top_p <= 1, "top_p must be in (0, 1], got ", o.top_p);
  TORCH_CHECK_VALUE(o.min_p >= 0 && o.min_p <= 1, "min_p must be in [0, 1], got ", o.min_p);
  TORCH_CHECK_VALUE(o.typical_p > 0 && o.typical_p <= 1, "typical_p must be in (0, 1], got ", o.typical_p);
  TORCH_CHECK_VALUE(o.epsilon_cutoff >= 0 && o.epsilon_cutoff < 1, "epsilon_cutoff must be in [0, 1), got ",
                    o.epsilon_cutoff);
  TORCH_CHECK_VALUE(o.eta_cutoff >= 0 && o.eta_cutoff < 1, "eta_cutoff must be in [0, 1), got ", o.eta_cutoff);
  TORCH_CHECK_VALUE(o.repetition_penalty > 0 && std::isfinite(static_cast<float>(o.repetition_penalty)) &&
                        fp32_inverse_finite(o.repetition_penalty),
                    "repetition_penalty must be > 0 with it and its inverse finite in fp32, got ", o.repetition_penalty);
  TORCH_CHECK_VALUE(o.no_repeat_ngram_size >= 0, "no_repeat_ngram_size must be >= 0 (0: off), got ",
                    o.no_repeat_ngram_size);
  TORCH_CHECK_VALUE(o.num_beams >= 1, "num_beams must be >= 1, got ", o.num_beams);
  TORCH_CHECK_VALUE(o.num_return_sequences >= 1 && o.num_return_sequences <= std::max<int64_t>(o.num_beams, 1) &&
                        (o.num_return_sequences == 1 || o.num_beams > 1),
                    "num_return_sequences must be in [1, num_beams] with beam search and 1 otherwise (repeat the "
                    "prompt rows for several samples), got ", o.num_return_sequences, " with num_beams ", o.num_beams);
  TORCH_CHECK_VALUE(std::isfinite(o.length_penalty), "length_penalty must be finite, got ", o.length_penalty);
  const int64_t P = input_ids.size(1);
  // Dynamic RoPE stretches the context; no cache holds 2^31 positions, and the sum must not
  // overflow (2^63 - 1 wrapped negative and decoded without end). Compared without adding.
  const bool dynamic = lm.options.rope().rope_type == "dynamic";
  const int64_t limit = dynamic ? (int64_t{1} << 31) : lm.options.max_position_embeddings();
  // P + n ids run the model on P + n - 1 positions: the last new token is never fed in.
  TORCH_CHECK_VALUE(P <= limit && o.max_new_tokens <= limit - P + 1, "a prompt of ", P, " tokens plus max_new_tokens ",
                    o.max_new_tokens, " exceeds the model's context (",
                    dynamic ? "dynamic RoPE: 2^31 positions" : "max_position_embeddings", " ", limit, ")");
  GenerationStart s;
  s.mask = attention_mask.defined() ? attention_mask.to(at::kLong) : at::ones_like(input_ids);
  TORCH_CHECK_VALUE(s.mask.sizes() == input_ids.sizes(), "attention_mask must be ", input_ids.sizes(),
                    " like input_ids, got ", s.mask.sizes());
  if (attention_mask.defined()) {
    nn::check_padding_mask(attention_mask);
    // Each row continues from its last token: a right-padded row generated from its pad token.
    const at::Tensor ends_padded = s.mask.select(1, -1) == 0;
    if (ends_padded.any().item<bool>())
      TORCH_CHECK_VALUE(false, "attention_mask: row ", ends_padded.nonzero()[0].item<int64_t>(),
                        " ends in padding; a decoder-only model continues each row from its last token, so pad "
                        "prompts on the left (padding_side='left')");
  }
  std::vector<int64_t> stops = o.eos_token_ids.value_or(lm.options.eos_token_ids());
  const int64_t vocab = lm.options.vocab_size();
  for (int64_t id : stops)
    TORCH_CHECK_VALUE(id >= 0 && id < vocab, "eos_token_id ", id, " is not a token of the model (vocab_size ", vocab, ")");
  // The first id as given pads finished rows (transformers' eos_token_tensor[0]); the set, sorted
  // and without repeats (a repeated id widened beam search's pool), stops them.
  s.first_stop = stops.empty() ? -1 : stops.front();
  s.pads_finished = (o.eos_token_ids.has_value() && o.pad_rows_without_stop_ids) || !stops.empty();
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  TORCH_CHECK_VALUE(o.min_new_tokens == 0 || static_cast<int64_t>(stops.size()) < vocab, "min_new_tokens ",
                    o.min_new_tokens, " holds back the stop ids, but every token of the model is one (",
                    stops.size(), " eos_token_id)");
  TORCH_CHECK_VALUE(o.pad_token_id >= -1 && o.pad_token_id < vocab, "pad_token_id ", o.pad_token_id,
                    " is not a token of the model (vocab_size ", vocab, ")");
  check_token_rules(o, vocab);
  keep_stops_allowed(o, stops);
  s.eos = at::tensor(stops, at::kLong).to(input_ids.device());
  if (o.pad_token_id < 0) o.pad_token_id = lm.options.pad_token_id() >= 0 ? lm.options.pad_token_id()
                                                                          : std::max<int64_t>(s.first_stop, 0);
  // Positions count real tokens: a left-padded row starts at 0 where its text starts.
  s.positions = (s.mask.cumsum(-1) - 1).masked_fill(s.mask == 0, 1);
  s.options = std::move(o);
  return s;
}

TextGeneration::TextGeneration(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                               GenerationOptions options, std::optional<at::Generator> generator,
                               const at::Tensor& inputs_embeds)
    : lm_(lm), generator_(std::move(generator)), inputs_embeds_(inputs_embeds), cache_(lm.options.num_hidden_layers()) {
  TORCH_CHECK_VALUE(options.num_beams == 1, "beam search (num_beams ", options.num_beams,
                    ") returns its tokens at the end: use generate, not a token-by-token stream");
  GenerationStart s = start_generation(lm, input_ids, attention_mask, std::move(options), inputs_embeds);
  options_ = std::move(s.options);
  mask_ = s.mask;
  eos_ = s.eos;
  pads_finished_ = s.pads_finished;
  positions_ = s.positions;
  sequences_ = input_ids;
  unfinished_ = at::ones({input_ids.size(0)}, input_ids.options().dtype(at::kBool));
  if (options_.use_cache) cache_.reserve(input_ids.size(1) + options_.max_new_tokens);
  done_ = options_.max_new_tokens == 0;
}

void check_prompt_scores(const at::Tensor& scores) {
  TORCH_CHECK_VALUE(!at::isnan(scores).any().item<bool>(),
                    "generate(): the prompt's logits are NaN: non-finite pixel_values or inputs_embeds, or NaN "
                    "weights; nothing can be generated from them");
}

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

at::Tensor TextGeneration::choose(const at::Tensor& logits) {
  at::Tensor scores = process_scores(logits, sequences_, options_, eos_, generated_);
  if (options_.logits_processor) scores = own_scores(options_.logits_processor, "logits_processor", sequences_, scores);
  if (options_.do_sample) scores = warp_scores(scores, options_);
  if (GenerationRecord* record = options_.record.get()) {  // copies: a processor may return its input
    if (record->keep_scores) record->scores.push_back(scores.clone());
    if (record->keep_logits) record->logits.push_back(logits.clone());
  }
  if (options_.stopping_criteria) scores_ = scores;  // what the caller's criteria read with the new ids
  if (!options_.do_sample)
    return ops::decode_argmax_applies(scores) ? ops::decode_argmax(scores) : scores.argmax(-1);
  return at::multinomial(scores.softmax(-1), 1, false, generator_).squeeze(-1);
}

at::Tensor TextGeneration::next() {
  if (done_) return {};
  at::NoGradGuard no_grad;
  // Layers run straight from C++ for this step only: set for the stream's lifetime, the flag
  // skipped Python hooks in the caller's own forwards between steps, and two streams ending out
  // of order left it set for good.
  struct DirectCalls {
    bool& flag;
    bool before;
    DirectCalls(bool& f, bool direct) : flag(f), before(f) { f = direct; }
    ~DirectCalls() { flag = before; }
  } direct{lm_.model->direct_calls, options_.direct_layer_calls};
  at::Tensor scores = logits_step().select(1, -1).to(at::kFloat);
  if (generated_ == 0) check_prompt_scores(scores);
  at::Tensor token = choose(scores);
  if (pads_finished_) token = at::where(unfinished_, token, at::full_like(token, options_.pad_token_id));
  sequences_ = at::cat({sequences_, token.unsqueeze(1)}, 1);
  mask_ = at::cat({mask_, at::ones_like(token).unsqueeze(1)}, 1);
  if (eos_.numel() > 0) unfinished_ = unfinished_.logical_and(at::isin(token, eos_).logical_not());
  if (options_.stopping_criteria)
    unfinished_ = unfinished_.logical_and(own_stops(options_, sequences_, scores_).logical_not());
  ++generated_;
  done_ = generated_ >= options_.max_new_tokens || !unfinished_.any().item<bool>();
  return token;
}

at::Tensor generate(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                    const GenerationOptions& options, std::optional<at::Generator> generator,
                    const at::Tensor& inputs_embeds) {
  if (options.num_beams > 1) {
    TORCH_CHECK_VALUE(!options.do_sample, "beam sampling (num_beams > 1 with do_sample) is not supported");
    return beam_search(lm, input_ids, attention_mask, options, inputs_embeds);
  }
  TextGeneration g(lm, input_ids, attention_mask, options, std::move(generator), inputs_embeds);
  while (!g.done()) g.next();
  return g.sequences();
}

}  // namespace tessera::models
