// Text generation with a KV cache, as transformers' generate() for decoder-only models: greedy,
// sampled (temperature, top-k, top-p, from a torch.Generator) or beam search, repetition penalty,
// min_new_tokens, stop ids,
// max_new_tokens, and batched prompts of different lengths (left padding + attention mask,
// positions counted from the mask). `TextGeneration` advances one token at a time (Python's
// streaming iterator); `generate` runs it to the end.
#pragma once
#include "tessera/models/llama/llama_model.h"

#include <ATen/core/Generator.h>

#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace tessera::models {

/// What generate hands back beside the ids, as transformers' return_dict_in_generate returns it
/// (GenerateDecoderOnlyOutput, GenerateBeamDecoderOnlyOutput); set GenerationOptions::record to
/// have it filled while decoding (each step's tensors are kept only when asked for).
struct GenerationRecord {
  bool keep_scores = false, keep_logits = false;  ///< output_scores, output_logits
  /// Each step's scores (after the processors, and the warpers when sampling; beam search: the
  /// processed log-probabilities) and raw fp32 logits, of every row or running beam [R, V].
  std::vector<at::Tensor> scores, logits;
  at::Tensor sequences_scores;  ///< beams: [B * n] the returned beams' sum(log p) / new_tokens ** length_penalty
  at::Tensor beam_indices;      ///< beams: [B * n, new] the flat running beam each new id came from (-1 past the end)
};

/// A caller's step hook, (ids so far [R, t], scores [R, V]) -> scores, or -> [R] bools for
/// stopping criteria (the scores may be undefined).
using StepHook = std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>;

/// transformers' early_stopping: when beam search ends.
enum class EarlyStopping {
  kHeuristic,  ///< false: once no running beam can beat the finished ones, judged at its current length
  kFirst,      ///< true: as soon as num_beams beams have finished
  kNever,      ///< "never": judged at max_new_tokens when length_penalty > 0 (the canonical beam search)
};

/// transformers' GenerationConfig fields (same names and defaults).
struct GenerationOptions {
  int64_t max_new_tokens = 20;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;   ///< 0: off
  double top_p = 1.0;   ///< 1: off
  double min_p = 0.0;   ///< sampling: drop tokens below min_p x the most likely one's probability (0: off)
  double typical_p = 1.0;       ///< sampling: locally typical tokens up to this mass (1: off)
  double epsilon_cutoff = 0.0;  ///< sampling: drop tokens below this probability (0: off)
  double eta_cutoff = 0.0;      ///< sampling: eta sampling, the cutoff scaled by the entropy (0: off)
  double repetition_penalty = 1.0;
  int64_t no_repeat_ngram_size = 0;   ///< > 0: no n-gram of this size twice in a row (prompt included); 0: off
  std::optional<std::vector<int64_t>> eos_token_ids;  ///< stop ids (unset: the model config's; empty: none)
  int64_t pad_token_id = -1;           ///< fills finished rows (-1: the config's, else the first stop id)
  /// false: a row the caller's stopping criterion ended goes on generating, as transformers does
  /// when its eos_token_id is None (no stop-id criterion, so nothing pads); stop ids still pad.
  bool pad_rows_without_stop_ids = true;
  bool use_cache = true;               ///< false recomputes the whole prefix every step (for comparison)
  /// Beam search (transformers' _beam_search) with this many beams; 1: greedy or sampling.
  int64_t num_beams = 1;
  /// Finished beams score sum(log p) / new_tokens ** length_penalty (> 0 favours longer ones).
  double length_penalty = 1.0;
  EarlyStopping early_stopping = EarlyStopping::kHeuristic;
  /// Beam search: the best this many finished beams per prompt (<= num_beams), best first, as
  /// transformers' num_return_sequences. (Several samples: repeat the prompt rows.)
  int64_t num_return_sequences = 1;
  /// Stop ids are forbidden until this many tokens are new.
  int64_t min_new_tokens = 0;
  // transformers' token rules, in the order its processors apply them (logits_processors.cpp):
  /// Added to the logits of a sequence's last token where the row ends with the rest of it (a
  /// one-token sequence: always); transformers' [[ids], bias] pairs without repeats.
  std::vector<std::pair<std::vector<int64_t>, double>> sequence_bias;
  std::vector<std::vector<int64_t>> bad_words_ids;  ///< as sequence_bias at -inf (a lone stop id is kept)
  int64_t forced_bos_token_id = -1;                  ///< forced first token of a one-token prompt (-1: off)
  std::vector<int64_t> forced_eos_token_ids;         ///< forced as the last of max_new_tokens (empty: off)
  /// (start, factor): past `start` new tokens the stop ids' logits grow by |logit| (factor^k - 1).
  std::optional<std::pair<int64_t, double>> exponential_decay_length_penalty;
  std::vector<int64_t> suppress_tokens;        ///< never generated
  std::vector<int64_t> begin_suppress_tokens;  ///< not generated first
  /// transformers' prefix_allowed_tokens_fn, as a processor at its place (after min_new_tokens):
  /// the scores with the tokens each row may not take at -inf.
  StepHook prefix_constraint;
  /// The caller's own processors (transformers' logits_processor=): each step's ids so far [R, t]
  /// and scores after the processors above [R, V] (beam search: log-probabilities) to new scores,
  /// before the sampling warpers.
  StepHook logits_processor;
  /// The caller's own stopping criteria (stopping_criteria=): the ids with the new token [R, t + 1]
  /// and the step's scores (undefined in beam search) to [R] bools, true where a row is done.
  StepHook stopping_criteria;
  bool direct_layer_calls = true;      ///< layers straight from C++ (no Python hooks during decoding)
  /// Filled while decoding when set (shared: every copy of the options writes the same record).
  std::shared_ptr<GenerationRecord> record;
};

/// A generation's checked start: the options with their defaults filled in (stop ids from the
/// config, the pad id), the 0/1 mask [B, P], the stop ids and the prompt's positions.
struct GenerationStart {
  GenerationOptions options;
  at::Tensor mask, eos, positions;
  int64_t first_stop = -1;  ///< the first stop id as given (-1: none): what pads finished rows
  /// transformers pads a finished row only when it has stop ids (given, even none, or the
  /// config's); a row that only the caller's stopping criteria ended generates on otherwise.
  bool pads_finished = false;
};
GenerationStart start_generation(const LlamaForCausalLMImpl& lm, const at::Tensor& input_ids,
                                 const at::Tensor& attention_mask, GenerationOptions options,
                                 const at::Tensor& inputs_embeds = {});
/// Refuses a prompt whose last logits hold NaN: a NaN input (pixel values, embeddings) or weight
/// reaches every logit of the prompt, and argmax or sampling would still pick tokens from it.
void check_prompt_scores(const at::Tensor& scores);
/// transformers' logits processors before any choice, in its order: SequenceBias, repetition
/// penalty over `sequences`, NoRepeatNGram, NoBadWords, MinNewTokensLength (stop ids at -inf while
/// fewer than min_new_tokens are new), ForcedBOS, ForcedEOS, ExponentialDecayLengthPenalty,
/// SuppressTokens, SuppressTokensAtBegin. `sequences` [R, P + new_tokens] are prompt and new ids.
at::Tensor process_scores(at::Tensor scores, const at::Tensor& sequences, const GenerationOptions& options,
                          const at::Tensor& eos, int64_t new_tokens);
/// A caller's processor hook (`name` for errors), its result checked: scores of the input's shape.
at::Tensor own_scores(const StepHook& hook, const char* name, const at::Tensor& sequences, const at::Tensor& scores);
/// The caller's stopping criteria, their result checked: one bool per row (or one for all).
at::Tensor own_stops(const GenerationOptions& o, const at::Tensor& sequences, const at::Tensor& scores);
/// transformers' sampling warpers, in its order: temperature, top-k, top-p, min-p, typical,
/// epsilon, eta (the tokens they drop at -inf).
at::Tensor warp_scores(at::Tensor scores, const GenerationOptions& options);

class TextGeneration {
 public:
  /// `input_ids` [B, P] (left-padded where rows differ; `attention_mask` [B, P] marks real tokens);
  /// `inputs_embeds` [B, P, D] replaces the prompt's embedding lookup (LLaVA's spliced images).
  TextGeneration(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                 GenerationOptions options, std::optional<at::Generator> generator = std::nullopt,
                 const at::Tensor& inputs_embeds = {});
  TextGeneration(const TextGeneration&) = delete;
  TextGeneration& operator=(const TextGeneration&) = delete;
  /// The next token of every row [B] (the pad id for finished rows); undefined once done.
  at::Tensor next();
  bool done() const { return done_; }
  /// Prompt followed by the tokens generated so far [B, P + n].
  at::Tensor sequences() const { return sequences_; }

 private:
  at::Tensor logits_step();
  at::Tensor choose(const at::Tensor& logits);
  LlamaForCausalLMImpl& lm_;
  GenerationOptions options_;
  std::optional<at::Generator> generator_;
  at::Tensor inputs_embeds_, sequences_, mask_, positions_, unfinished_, eos_;
  at::Tensor scores_;  ///< the step's scores, kept for the caller's stopping criteria
  nn::KVCache cache_;
  int64_t generated_ = 0;
  bool done_ = false, pads_finished_ = false;
};

/// Beam search to the end (options.num_beams > 1): each prompt followed by its best
/// num_return_sequences beams [B * n, ...] (a prompt's rows together, best first), the shorter
/// ones filled with the pad id, as transformers returns them.
at::Tensor beam_search(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                       const GenerationOptions& options, const at::Tensor& inputs_embeds = {});

/// Runs a TextGeneration to the end (or beam_search): the prompt followed by the new tokens.
at::Tensor generate(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                    const GenerationOptions& options = {}, std::optional<at::Generator> generator = std::nullopt,
                    const at::Tensor& inputs_embeds = {});

}  // namespace tessera::models
