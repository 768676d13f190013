// transformers' logits processors (generation/logits_process.py), in the order its generate
// applies them: the processors of every mode (process_scores), then the sampling warpers
// (warp_scores). Each keeps at least the most likely token, as transformers' min_tokens_to_keep 1.
// The caller's own hooks (prefix_allowed_tokens_fn, logits_processor, stopping_criteria) are
// called through own_scores / own_stops, which check what they return.
#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "tessera/models/llama/llama_generate.h"

namespace tessera::models {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Rows of `remove` in the order `order` gives them, scattered back to vocabulary order.
at::Tensor unsort(const at::Tensor& remove, const at::Tensor& order) { return remove.scatter(-1, order, remove); }

// transformers' SequenceBiasLogitsProcessor (and NoBadWords, at -inf): a one-token sequence's
// bias on every row, a longer one's on its last token in the rows whose last ids are the rest of it.
at::Tensor add_sequence_bias(const at::Tensor& scores, const at::Tensor& sequences,
                             const std::vector<std::pair<std::vector<int64_t>, double>>& biases) {
  if (biases.empty()) return scores;
  const int64_t length = sequences.size(1);
  at::Tensor bias = at::zeros_like(scores);
  for (const auto& [ids, value] : biases)
    if (ids.size() == 1) bias.select(1, ids[0]).fill_(value);
  const at::Tensor zero = at::zeros({}, scores.options());
  for (const auto& [ids, value] : biases) {
    const int64_t k = static_cast<int64_t>(ids.size());
    if (k == 1 || k > length) continue;
    at::Tensor rest = at::tensor(std::vector<int64_t>(ids.begin(), ids.end() - 1), sequences.options());
    at::Tensor match = sequences.narrow(1, length - (k - 1), k - 1).eq(rest).all(1);
    bias.select(1, ids.back()).add_(at::where(match, at::full({}, value, scores.options()), zero));
  }
  return scores + bias;
}

// Every token but `ids` at -inf, those at 0 (ForcedBOS, ForcedEOS).
at::Tensor force(const at::Tensor& scores, const at::Tensor& ids) {
  return at::full_like(scores, kNegInf).index_fill(1, ids, 0.0);
}

at::Tensor suppress(const at::Tensor& scores, const std::vector<int64_t>& ids) {
  at::Tensor vocab = at::arange(scores.size(1), scores.options().dtype(at::kLong));
  return scores.masked_fill(at::isin(vocab, at::tensor(ids, vocab.options())), kNegInf);  // ids past it: none
}

}  // namespace

at::Tensor process_scores(at::Tensor scores, const at::Tensor& sequences, const GenerationOptions& o,
                          const at::Tensor& eos, int64_t new_tokens) {
  scores = add_sequence_bias(scores, sequences, o.sequence_bias);
  if (o.repetition_penalty != 1.0) {  // every token seen so far, prompt included
    at::Tensor seen = at::gather(scores, 1, sequences);
    seen = at::where(seen < 0, seen * o.repetition_penalty, seen / o.repetition_penalty);
    scores = scores.scatter(1, sequences, seen);
  }
  const int64_t n = o.no_repeat_ngram_size, length = sequences.size(1);
  if (n > 0 && length >= n) {
    // A token is banned where the row's last n - 1 ids already occurred followed by it: match the
    // last n - 1 ids against every window's first n - 1; a window that does not match points at a
    // spare column past the vocabulary, so it cannot clear another window's ban.
    const int64_t vocab = scores.size(1);
    at::Tensor windows = sequences.unfold(1, n, 1);  // [R, length - n + 1, n]
    at::Tensor last = sequences.narrow(1, length + 1 - n, n - 1).unsqueeze(1);
    at::Tensor matches = windows.narrow(2, 0, n - 1).eq(last).all(-1);
    at::Tensor banned = at::zeros({scores.size(0), vocab + 1}, scores.options().dtype(at::kBool));
    banned.scatter_(1, at::where(matches, windows.select(2, n - 1), vocab), true);
    scores = scores.masked_fill(banned.narrow(1, 0, vocab), kNegInf);
  }
  if (!o.bad_words_ids.empty()) {
    std::vector<std::pair<std::vector<int64_t>, double>> banned;
    for (const auto& ids : o.bad_words_ids) banned.emplace_back(ids, kNegInf);
    scores = add_sequence_bias(scores, sequences, banned);
  }
  if (new_tokens < o.min_new_tokens && eos.numel() > 0) scores = scores.index_fill(1, eos, kNegInf);
  if (o.prefix_constraint) scores = own_scores(o.prefix_constraint, "prefix_allowed_tokens_fn", sequences, scores);
  const int64_t prompt = length - new_tokens;
  if (o.forced_bos_token_id >= 0 && length == 1)
    scores = force(scores, at::full({1}, o.forced_bos_token_id, sequences.options()));
  if (!o.forced_eos_token_ids.empty() && new_tokens == o.max_new_tokens - 1)
    scores = force(scores, at::tensor(o.forced_eos_token_ids, sequences.options()));
  if (o.exponential_decay_length_penalty && eos.numel() > 0) {
    const auto [start, factor] = *o.exponential_decay_length_penalty;
    if (new_tokens > start) {  // the stop ids' logits raised by |logit| (factor^k - 1)
      at::Tensor raise = scores.index_select(1, eos).abs() * (std::pow(factor, new_tokens - start) - 1);
      scores = scores + at::zeros_like(scores).index_copy(1, eos, raise);
    }
  }
  if (!o.suppress_tokens.empty()) scores = suppress(scores, o.suppress_tokens);
  // transformers suppresses at the first new token, one later after a forced bos
  const int64_t begin = prompt > 1 || o.forced_bos_token_id < 0 ? 0 : 1;
  if (!o.begin_suppress_tokens.empty() && new_tokens == begin) scores = suppress(scores, o.begin_suppress_tokens);
  return scores;
}

at::Tensor own_scores(const StepHook& hook, const char* name, const at::Tensor& sequences, const at::Tensor& scores) {
  at::Tensor out = hook(sequences, scores);
  TORCH_CHECK_VALUE(out.defined() && out.sizes() == scores.sizes() && out.is_floating_point(),
                    name, " must return the scores' shape ", scores.sizes(), " as floats, got ",
                    out.defined() ? out.sizes() : at::IntArrayRef{}, out.defined() ? " " : "nothing",
                    out.defined() ? c10::toString(out.scalar_type()) : "");
  return out.to(scores.device(), scores.scalar_type());
}

at::Tensor own_stops(const GenerationOptions& o, const at::Tensor& sequences, const at::Tensor& scores) {
  at::Tensor done = o.stopping_criteria(sequences, scores);
  TORCH_CHECK_VALUE(done.defined() && done.dim() <= 1 && (done.dim() == 0 || done.size(0) == sequences.size(0)),
                    "stopping_criteria must return one bool per row [", sequences.size(0), "], got ",
                    done.defined() ? done.sizes() : at::IntArrayRef{});
  return done.to(sequences.device(), at::kBool).expand({sequences.size(0)});
}

at::Tensor warp_scores(at::Tensor scores, const GenerationOptions& o) {
  if (o.temperature != 1.0) scores = scores / o.temperature;
  if (o.top_k > 0) {
    const int64_t k = std::min<int64_t>(o.top_k, scores.size(-1));
    at::Tensor kth = std::get<0>(at::topk(scores, k, -1)).narrow(-1, k - 1, 1);
    scores = scores.masked_fill(scores < kth, kNegInf);
  }
  if (o.top_p < 1.0) {  // drop the least likely tokens whose total mass stays within 1 - top_p
    auto [sorted, order] = at::sort(scores, -1, /*descending=*/false);
    at::Tensor remove = sorted.softmax(-1).cumsum(-1) <= (1 - o.top_p);
    remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);  // keep at least the most likely
    scores = scores.masked_fill(unsort(remove, order), kNegInf);
  }
  if (o.min_p > 0) {  // below min_p times the most likely token's probability
    at::Tensor probs = scores.softmax(-1);
    at::Tensor remove = probs < std::get<0>(probs.max(-1, true)) * o.min_p;
    scores = scores.masked_fill(remove.scatter(-1, probs.argmax(-1, true), false), kNegInf);
  }
  if (o.typical_p < 1.0) {  // the tokens whose surprise is closest to the entropy, up to typical_p of the mass
    at::Tensor log_probs = scores.log_softmax(-1);
    at::Tensor entropy = -at::nansum(log_probs * log_probs.exp(), {-1}, true);
    auto [shifted, order] = at::sort((-log_probs - entropy).abs(), -1, /*descending=*/false);
    at::Tensor mass = scores.gather(-1, order).softmax(-1).cumsum(-1);
    at::Tensor last = (mass < o.typical_p).sum(-1, true).clamp_max(scores.size(-1) - 1);
    at::Tensor remove = shifted > shifted.gather(-1, last);
    remove.narrow(-1, 0, 1).fill_(false);
    scores = scores.masked_fill(unsort(remove, order), kNegInf);
  }
  const auto cut_below = [&](const at::Tensor& floor) {  // epsilon and eta sampling: never the most likely
    at::Tensor best = std::get<0>(scores.max(-1, true));
    return scores.masked_fill((scores.softmax(-1) < floor).logical_and(scores < best), kNegInf);
  };
  if (o.epsilon_cutoff > 0) scores = cut_below(at::scalar_tensor(o.epsilon_cutoff, scores.options()));
  if (o.eta_cutoff > 0) {  // epsilon scaled by the entropy: min(eta, sqrt(eta) * exp(-entropy))
    // torch.distributions.Categorical's entropy, as transformers takes it (a -inf term adds 0)
    at::Tensor normalized = scores - scores.logsumexp(-1, true);
    at::Tensor terms = normalized * normalized.softmax(-1);
    at::Tensor entropy = -at::where(normalized.isneginf(), at::zeros_like(terms), terms).sum(-1, true);
    at::Tensor eta = at::scalar_tensor(o.eta_cutoff, scores.options());
    scores = cut_below(at::minimum(eta, eta.sqrt() * (-entropy).exp()));
  }
  return scores;
}

}  // namespace tessera::models
