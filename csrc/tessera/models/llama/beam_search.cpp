// Beam search as transformers 5's vectorised _beam_search (generation/utils.py), step for step so
// that the ids are equal: per prompt, the top (1 + stop ids, at least 2) x num_beams continuations
// of all beams; the best num_beams that did not stop run on, those that stopped among the top
// num_beams compete for the finished slots by sum(log p) / new_tokens ** length_penalty; it ends
// when no running beam can beat the worst finished one (early_stopping).
#include "tessera/models/llama/llama_generate.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {
namespace {

constexpr double kNever = -1.0e9;  // transformers' "very large negative" score

// rows [B, n, ...] picked per batch by `index` [B, k] -> [B, k, ...]
at::Tensor gather_beams(const at::Tensor& t, const at::Tensor& index) {
  std::vector<int64_t> shape(t.dim(), 1);
  shape[0] = index.size(0);
  shape[1] = index.size(1);
  at::Tensor idx = index.view(shape);
  std::vector<int64_t> expand(t.sizes().begin(), t.sizes().end());
  expand[1] = index.size(1);
  return t.gather(1, idx.expand(expand));
}

}  // namespace

at::Tensor beam_search(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                       const GenerationOptions& options, const at::Tensor& inputs_embeds) {
  at::NoGradGuard no_grad;
  GenerationStart s = start_generation(lm, input_ids, attention_mask, options, inputs_embeds);
  const GenerationOptions& o = s.options;
  TORCH_CHECK_VALUE(o.use_cache, "beam search runs with the KV cache (use_cache=True)");
  const int64_t B = input_ids.size(0), P = input_ids.size(1), nb = o.num_beams, V = lm.options.vocab_size();
  const int64_t max_length = P + o.max_new_tokens;
  if (o.max_new_tokens == 0) return input_ids.repeat_interleave(o.num_return_sequences, 0);
  const int64_t keep = std::min(std::max<int64_t>(2, 1 + s.eos.numel()) * nb, nb * V);  // transformers' pool, capped
  const auto long_opts = input_ids.options();
  const auto float_opts = long_opts.dtype(at::kFloat);

  // [B, nb, max_length] beams, filled past their end as transformers does: `pad or eos[0]`, so a pad
  // id of 0 gives way to the first stop id as given.
  const int64_t fill = o.pad_token_id == 0 && s.first_stop >= 0 ? s.first_stop : o.pad_token_id;
  at::Tensor running = at::full({B, nb, max_length}, fill, long_opts);
  running.narrow(2, 0, P).copy_(input_ids.unsqueeze(1).expand({B, nb, P}));
  at::Tensor finished = running.clone();
  at::Tensor running_scores = at::zeros({B, nb}, float_opts);
  running_scores.narrow(1, 1, nb - 1).fill_(kNever);  // every beam starts as the first one
  at::Tensor finished_scores = at::full({B, nb}, kNever, float_opts);
  at::Tensor is_finished = at::zeros({B, nb}, long_opts.dtype(at::kBool));
  at::Tensor finished_lengths = at::zeros({B, nb}, long_opts);
  at::Tensor improvable = at::ones({B, 1}, long_opts.dtype(at::kBool));
  at::Tensor top_beams = at::arange(keep, long_opts) < nb;
  const at::Tensor batch_offset = at::arange(B, long_opts).unsqueeze(1) * nb;
  // transformers' beam_indices (only when recorded): the flat beam each new id of a beam came from
  GenerationRecord* record = o.record.get();
  at::Tensor running_from, finished_from;
  if (record) {
    record->scores.clear();
    record->logits.clear();
    running_from = at::full({B, nb, o.max_new_tokens}, -1, long_opts);
    finished_from = running_from.clone();
  }

  nn::KVCache cache(lm.options.num_hidden_layers());
  cache.reserve(max_length);
  at::Tensor mask = s.mask.repeat_interleave(nb, 0);
  at::Tensor positions = s.positions.repeat_interleave(nb, 0);
  const bool previous_direct = lm.model->direct_calls;
  lm.model->direct_calls = o.direct_layer_calls;
  struct Restore {
    LlamaForCausalLMImpl& lm;
    bool direct;
    ~Restore() { lm.model->direct_calls = direct; }
  } restore{lm, previous_direct};

  at::Tensor logits = lm.forward(inputs_embeds.defined() ? at::Tensor() : input_ids.repeat_interleave(nb, 0), mask,
                                 positions, inputs_embeds.defined() ? inputs_embeds.repeat_interleave(nb, 0) : at::Tensor(),
                                 {}, false, &cache, 1)
                          .logits;
  check_prompt_scores(logits.select(1, -1));
  for (int64_t cur = P;; ++cur) {
    at::Tensor log_probs = logits.select(1, -1).to(at::kFloat).log_softmax(-1);
    const at::Tensor flat_running = running.narrow(2, 0, cur).reshape({B * nb, cur});
    log_probs = process_scores(log_probs, flat_running, o, s.eos, cur - P);
    if (o.logits_processor) log_probs = own_scores(o.logits_processor, "logits_processor", flat_running, log_probs);
    if (record && record->keep_scores) record->scores.push_back(log_probs.clone());
    if (record && record->keep_logits) record->logits.push_back(logits.select(1, -1).to(at::kFloat, false, /*copy=*/true));
    log_probs = (log_probs.view({B, nb, V}) + running_scores.unsqueeze(2)).view({B, nb * V});
    auto [top_scores, top_index] = at::topk(log_probs, keep);  // [B, keep]
    at::Tensor from_beam = top_index.div(V, "floor"), token = top_index.remainder(V);
    at::Tensor candidates = gather_beams(running, from_beam);  // [B, keep, max_length]
    candidates.select(2, cur).copy_(token);
    at::Tensor candidates_from;
    if (record) {
      candidates_from = gather_beams(running_from, from_beam);
      candidates_from.select(2, cur - P).copy_(from_beam + batch_offset);
    }
    at::Tensor stops = s.eos.numel() > 0 ? at::isin(token, s.eos) : at::zeros_like(token, at::kBool);
    if (o.stopping_criteria)  // transformers passes the candidates, not the step's scores
      stops = stops.logical_or(own_stops(o, candidates.narrow(2, 0, cur + 1).reshape({B * keep, cur + 1}), {})
                                   .view({B, keep}));
    if (cur + 1 >= max_length) stops.fill_(true);

    // The best num_beams candidates that did not stop run on.
    at::Tensor run_scores = top_scores + stops.to(at::kFloat) * kNever;
    at::Tensor next = std::get<1>(at::topk(run_scores, nb));
    running = gather_beams(candidates, next);
    running_scores = run_scores.gather(1, next);
    if (record) running_from = gather_beams(candidates_from, next);
    cache.reorder((from_beam.gather(1, next) + batch_offset).view(-1));

    // Candidates among the top num_beams that stopped compete for the finished slots.
    at::Tensor just_finished = stops.logical_and(top_beams.unsqueeze(0));
    at::Tensor scores = top_scores / std::pow(static_cast<double>(cur + 1 - P), o.length_penalty);
    if (o.early_stopping == EarlyStopping::kFirst) scores = scores + is_finished.all(1, true).to(at::kFloat) * kNever;
    scores = scores + improvable.logical_not().to(at::kFloat) * kNever;
    scores = scores + just_finished.logical_not().to(at::kFloat) * kNever;
    at::Tensor merged_scores = at::cat({finished_scores, scores}, 1);
    at::Tensor best = std::get<1>(at::topk(merged_scores, nb));
    finished = gather_beams(at::cat({finished, candidates}, 1), best);
    finished_scores = merged_scores.gather(1, best);
    is_finished = at::cat({is_finished, just_finished}, 1).gather(1, best);
    finished_lengths = at::cat({finished_lengths, at::full({B, keep}, cur + 1 - P, long_opts)}, 1).gather(1, best);
    if (record) finished_from = gather_beams(at::cat({finished_from, candidates_from}, 1), best);

    // transformers' stopping rule: can a running beam still beat the worst finished one?
    const bool to_the_end = o.early_stopping == EarlyStopping::kNever && o.length_penalty > 0;
    const double hypothetical = static_cast<double>(to_the_end ? o.max_new_tokens : cur + 1 - P);
    at::Tensor best_running = running_scores.narrow(1, 0, 1) / std::pow(hypothetical, o.length_penalty);
    at::Tensor worst_finished = at::where(is_finished, std::get<0>(finished_scores.min(1, true)),
                                          at::full({}, kNever, float_opts));
    improvable = improvable.logical_and((best_running > worst_finished).any(-1, true));
    const bool open_beam = !(o.early_stopping == EarlyStopping::kFirst && is_finished.all().item<bool>());
    if (!(improvable.any().item<bool>() && open_beam && !stops.all().item<bool>())) break;

    mask = at::cat({mask, at::ones({B * nb, 1}, long_opts)}, 1);
    at::Tensor pos = positions.narrow(1, positions.size(1) - 1, 1) + 1;
    positions = at::cat({positions, pos}, 1);
    logits = lm.forward(running.select(2, cur).reshape({B * nb, 1}), mask, pos, {}, {}, false, &cache, 1).logits;
  }
  // The best num_return_sequences finished beams per prompt (sorted: topk), cut where the longest
  // returned one ends.
  const int64_t n = o.num_return_sequences;
  const int64_t generated = finished_lengths.narrow(1, 0, n).max().item<int64_t>();
  if (record) {
    record->sequences_scores = finished_scores.narrow(1, 0, n).reshape({B * n});
    record->beam_indices = finished_from.narrow(1, 0, n).reshape({B * n, o.max_new_tokens}).narrow(1, 0, generated)
                               .to(at::kInt);  // transformers' dtype
  }
  return finished.narrow(1, 0, n).reshape({B * n, max_length}).narrow(1, 0, P + generated);
}

}  // namespace tessera::models
