// BLIP-2 configuration (Li et al. 2023) with the names and defaults of transformers'
// Blip2VisionConfig, Blip2QFormerConfig and Blip2Config. Each field is declared once in visit_fields.
#pragma once
#include "tessera/models/llama/llama_options.h"

#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <optional>
#include <string>

namespace tessera::models {

/// The EVA-style image tower: pre-norm layers with a fused `qkv` projection, post-norm on every token.
struct Blip2VisionOptions {
  TORCH_ARG(int64_t, hidden_size) = 1408;
  TORCH_ARG(int64_t, intermediate_size) = 6144;
  TORCH_ARG(int64_t, num_hidden_layers) = 39;
  TORCH_ARG(int64_t, num_attention_heads) = 16;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 14;
  TORCH_ARG(std::string, hidden_act) = "gelu";
  TORCH_ARG(double, layer_norm_eps) = 1e-6;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(double, initializer_range) = 1e-10;
  /// Biases on the query and value thirds of `qkv` (the key third stays zero at init).
  TORCH_ARG(bool, qkv_bias) = true;

 public:
  template <class V>
  void visit_fields(V&& v) {
    v("hidden_size", hidden_size());
    v("intermediate_size", intermediate_size());
    v("num_hidden_layers", num_hidden_layers());
    v("num_attention_heads", num_attention_heads());
    v("image_size", image_size());
    v("patch_size", patch_size());
    v("hidden_act", hidden_act());
    v("layer_norm_eps", layer_norm_eps());
    v("attention_dropout", attention_dropout());
    v("initializer_range", initializer_range());
    v("qkv_bias", qkv_bias());
  }
  void validate(const std::string& where) const;
  static Blip2VisionOptions from_json(const nlohmann::json& j, const std::string& where = "vision_config",
                                      bool strict = false);
  nlohmann::json to_json() const;
  int64_t num_patches() const { return (image_size() / patch_size()) * (image_size() / patch_size()); }
};

/// The Querying Transformer: BERT post-norm layers; cross-attention to the image features in
/// every `cross_attention_frequency`-th layer; the query tokens take their own feed-forward.
struct Blip2QFormerOptions {
  TORCH_ARG(int64_t, vocab_size) = 30522;
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(std::string, hidden_act) = "gelu";
  TORCH_ARG(double, hidden_dropout_prob) = 0.1;
  TORCH_ARG(double, attention_probs_dropout_prob) = 0.1;
  TORCH_ARG(int64_t, max_position_embeddings) = 512;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(int64_t, pad_token_id) = 0;
  /// Layer i cross-attends to the image when i % cross_attention_frequency == 0.
  TORCH_ARG(int64_t, cross_attention_frequency) = 2;
  /// Width of the image features the queries attend to (the vision tower's hidden_size).
  TORCH_ARG(int64_t, encoder_hidden_size) = 1408;
  /// Text tokens share the layers with the queries (word/position embeddings, a text feed-forward).
  TORCH_ARG(bool, use_qformer_text_input) = false;

 public:
  template <class V>
  void visit_fields(V&& v) {
    v("vocab_size", vocab_size());
    v("hidden_size", hidden_size());
    v("num_hidden_layers", num_hidden_layers());
    v("num_attention_heads", num_attention_heads());
    v("intermediate_size", intermediate_size());
    v("hidden_act", hidden_act());
    v("hidden_dropout_prob", hidden_dropout_prob());
    v("attention_probs_dropout_prob", attention_probs_dropout_prob());
    v("max_position_embeddings", max_position_embeddings());
    v("initializer_range", initializer_range());
    v("layer_norm_eps", layer_norm_eps());
    v("pad_token_id", pad_token_id());
    v("cross_attention_frequency", cross_attention_frequency());
    v("encoder_hidden_size", encoder_hidden_size());
    v("use_qformer_text_input", use_qformer_text_input());
  }
  void validate(const std::string& where) const;
  static Blip2QFormerOptions from_json(const nlohmann::json& j, const std::string& where = "qformer_config",
                                       bool strict = false);
  nlohmann::json to_json() const;
};

/// Blip2Config: the three parts, the learned queries and the heads around them.
struct Blip2Options {
  Blip2VisionOptions vision;
  Blip2QFormerOptions qformer;
  /// The language model's config when it is a LLaMA (Blip2ForConditionalGeneration needs one).
  std::optional<LlamaOptions> text;
  /// Any other text_config (transformers' default is OPT's), kept verbatim to write back.
  std::string other_text_config;
  TORCH_ARG(int64_t, num_query_tokens) = 32;
  /// The prompt's placeholder for one query output (-1: none, transformers' None).
  TORCH_ARG(int64_t, image_token_index) = -1;
  /// Width of the ITC embeddings (vision_projection / text_projection).
  TORCH_ARG(int64_t, image_text_hidden_size) = 256;
  TORCH_ARG(double, initializer_factor) = 1.0;
  TORCH_ARG(double, initializer_range) = 0.02;

 public:
  void validate(const std::string& where) const;
  static Blip2Options from_json(const nlohmann::json& j, const std::string& where = "blip-2 config",
                                bool strict = false);
  nlohmann::json to_json() const;
};

}  // namespace tessera::models
