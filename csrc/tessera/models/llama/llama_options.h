// LLaMA configuration (Touvron et al. 2023) with the names and defaults of transformers'
// LlamaConfig (Llama-2-7B sizes). Rotary settings read transformers 5's `rope_parameters` and the
// older `rope_theta` + `rope_scaling` (with `type` or `rope_type`); `eos_token_id` may be a list.
#pragma once
#include "tessera/nn/rotary.h"

#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>
#include <vector>

namespace tessera::models {

struct LlamaOptions {
  TORCH_ARG(int64_t, vocab_size) = 32000;
  TORCH_ARG(int64_t, hidden_size) = 4096;
  TORCH_ARG(int64_t, intermediate_size) = 11008;
  TORCH_ARG(int64_t, num_hidden_layers) = 32;
  TORCH_ARG(int64_t, num_attention_heads) = 32;
  /// Grouped-query attention: key/value heads (0 in the struct = num_attention_heads).
  TORCH_ARG(int64_t, num_key_value_heads) = 0;
  /// 0 = hidden_size / num_attention_heads.
  TORCH_ARG(int64_t, head_dim) = 0;
  TORCH_ARG(std::string, hidden_act) = "silu";
  TORCH_ARG(int64_t, max_position_embeddings) = 2048;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, rms_norm_eps) = 1e-6;
  TORCH_ARG(bool, tie_word_embeddings) = false;
  TORCH_ARG(bool, attention_bias) = false;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(bool, mlp_bias) = false;
  TORCH_ARG(int64_t, bos_token_id) = 1;
  /// -1: none (config null).
  TORCH_ARG(int64_t, pad_token_id) = -1;
  TORCH_ARG(std::vector<int64_t>, eos_token_ids) = std::vector<int64_t>{2};
  TORCH_ARG(nn::RopeScaling, rope) = {};

 public:
  /// The plain fields (rope, eos and nullable keys are read and written by hand).
  template <class V>
  void visit_fields(V&& v) {
    v("vocab_size", vocab_size());
    v("hidden_size", hidden_size());
    v("intermediate_size", intermediate_size());
    v("num_hidden_layers", num_hidden_layers());
    v("num_attention_heads", num_attention_heads());
    v("hidden_act", hidden_act());
    v("max_position_embeddings", max_position_embeddings());
    v("initializer_range", initializer_range());
    v("rms_norm_eps", rms_norm_eps());
    v("tie_word_embeddings", tie_word_embeddings());
    v("attention_bias", attention_bias());
    v("attention_dropout", attention_dropout());
    v("mlp_bias", mlp_bias());
    v("bos_token_id", bos_token_id());
  }
  void validate(const std::string& where) const;
  static LlamaOptions from_json(const nlohmann::json& j, const std::string& where = "llama config",
                                bool strict = false);
  static LlamaOptions from_file(const std::string& path);
  nlohmann::json to_json() const;
  int64_t kv_heads() const { return num_key_value_heads() > 0 ? num_key_value_heads() : num_attention_heads(); }
  int64_t dim_per_head() const { return head_dim() > 0 ? head_dim() : hidden_size() / num_attention_heads(); }
};

}  // namespace tessera::models
