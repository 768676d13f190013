// Text generation with a KV cache, as transformers' generate() for decoder-only models: greedy or
// sampled (temperature, top-k, top-p, from a torch.Generator), repetition penalty, stop ids,
// max_new_tokens, and batched prompts of different lengths (left padding + attention mask,
// positions counted from the mask). `TextGeneration` advances one token at a time (Python's
// streaming iterator); `generate` runs it to the end.
#pragma once
#include "tessera/models/llama/llama_model.h"

#include <ATen/core/Generator.h>

#include <optional>
#include <vector>

namespace tessera::models {

/// transformers' GenerationConfig fields (same names and defaults).
struct GenerationOptions {
  int64_t max_new_tokens = 20;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;   ///< 0: off
  double top_p = 1.0;   ///< 1: off
  double repetition_penalty = 1.0;
  std::optional<std::vector<int64_t>> eos_token_ids;  ///< stop ids (unset: the model config's; empty: none)
  int64_t pad_token_id = -1;           ///< fills finished rows (-1: the config's, else the first stop id)
  bool use_cache = true;               ///< false recomputes the whole prefix every step (for comparison)
  bool direct_layer_calls = true;      ///< layers straight from C++ (no Python hooks during decoding)
};

class TextGeneration {
 public:
  /// `input_ids` [B, P] (left-padded where rows differ; `attention_mask` [B, P] marks real tokens);
  /// `inputs_embeds` [B, P, D] replaces the prompt's embedding lookup (LLaVA's spliced images).
  TextGeneration(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask,
                 GenerationOptions options, std::optional<at::Generator> generator = std::nullopt,
                 const at::Tensor& inputs_embeds = {});
  ~TextGeneration();
  TextGeneration(const TextGeneration&) = delete;
  TextGeneration& operator=(const TextGeneration&) = delete;
  /// The next token of every row [B] (the pad id for finished rows); undefined once done.
  at::Tensor next();
  bool done() const { return done_; }
  /// Prompt followed by the tokens generated so far [B, P + n].
  at::Tensor sequences() const { return sequences_; }

 private:
  at::Tensor logits_step();
  at::Tensor choose(at::Tensor logits);
  LlamaForCausalLMImpl& lm_;
  GenerationOptions options_;
  std::optional<at::Generator> generator_;
  at::Tensor inputs_embeds_, sequences_, mask_, positions_, unfinished_, eos_;
  nn::KVCache cache_;
  int64_t generated_ = 0;
  bool done_ = false, previous_direct_ = false;
};

/// Runs a TextGeneration to the end: the prompt followed by the new tokens.
at::Tensor generate(LlamaForCausalLMImpl& lm, const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                    const GenerationOptions& options = {}, std::optional<at::Generator> generator = std::nullopt,
                    const at::Tensor& inputs_embeds = {});

}  // namespace tessera::models
