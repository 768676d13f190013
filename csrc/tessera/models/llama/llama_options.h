// LLaMA configuration (Touvron et al. 2023) with the names and defaults of transformers'
// LlamaConfig (Llama-2-7B sizes). Rotary settings read transformers 5's `rope_parameters` and the
// older `rope_theta` + `rope_scaling` (with `type` or `rope_type`); `eos_token_id` may be a list.
#pragma once
#include "tessera/core/config_fields.h"
#include "tessera/nn/rotary.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

// CUSTOM rows are read and written by hand in llama_options.cpp (derived defaults, null, lists, rope).
// clang-format off
#define TESSERA_LLAMA_OPTIONS(FIELD, CUSTOM, NESTED)                                                          \
  FIELD(int64_t, vocab_size, 32000, "token vocabulary size")                                                  \
  FIELD(int64_t, hidden_size, 4096, "width of the hidden states")                                             \
  FIELD(int64_t, intermediate_size, 11008, "width of the SwiGLU feed-forward")                                \
  FIELD(int64_t, num_hidden_layers, 32, "decoder layers")                                                     \
  FIELD(int64_t, num_attention_heads, 32, "query heads per layer")                                            \
  CUSTOM(int64_t, num_key_value_heads, 0, "num_key_value_heads",                                              \
         "grouped-query attention: key/value heads (0 in the struct = num_attention_heads)")                  \
  CUSTOM(int64_t, head_dim, 0, "head_dim", "width of one head (0 in the struct = hidden_size / num_attention_heads)") \
  FIELD(std::string, hidden_act, "silu", "feed-forward activation (silu only)")                               \
  FIELD(int64_t, max_position_embeddings, 2048, "longest sequence the rotary table is built for")             \
  FIELD(double, initializer_range, 0.02, "std of the normal init of linears and embeddings")                  \
  FIELD(double, rms_norm_eps, 1e-6, "epsilon of every RMSNorm")                                               \
  FIELD(bool, tie_word_embeddings, false, "the LM head shares the token embedding matrix")                    \
  FIELD(bool, attention_bias, false, "biases on the query, key, value and output projections")                \
  FIELD(double, attention_dropout, 0.0, "dropout on attention weights")                                       \
  FIELD(bool, mlp_bias, false, "biases on the feed-forward projections")                                      \
  FIELD(int64_t, bos_token_id, 1, "beginning-of-sequence token id")                                           \
  CUSTOM(int64_t, pad_token_id, -1, "pad_token_id", "padding token id (-1 in the struct: none, config null)") \
  CUSTOM(std::vector<int64_t>, eos_token_ids, std::vector<int64_t>{2}, "eos_token_id",                        \
         "end-of-sequence token id, or a list of them")                                                       \
  CUSTOM(nn::RopeScaling, rope, {}, "rope_parameters",                                                        \
         "rotary settings: rope_type (default, linear, dynamic, llama3), rope_theta, factor, ...")
// clang-format on

namespace tessera::models {

struct LlamaOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_LLAMA_OPTIONS)
  void validate(const std::string& where) const;
  static LlamaOptions from_json(const nlohmann::json& j, const std::string& where = "llama config",
                                bool strict = false);
  static LlamaOptions from_file(const std::string& path);
  nlohmann::json to_json() const;
  int64_t kv_heads() const { return num_key_value_heads() > 0 ? num_key_value_heads() : num_attention_heads(); }
  int64_t dim_per_head() const { return head_dim() > 0 ? head_dim() : hidden_size() / num_attention_heads(); }
};

}  // namespace tessera::models
