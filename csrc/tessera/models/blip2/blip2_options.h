// BLIP-2 configuration (Li et al. 2023) with the names and defaults of transformers'
// Blip2VisionConfig, Blip2QFormerConfig and Blip2Config. Each field is declared once, in the tables
// below (core/config_fields.h).
#pragma once
#include "tessera/core/config_fields.h"
#include "tessera/models/llama/llama_options.h"

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>

// clang-format off
#define TESSERA_BLIP2_VISION_OPTIONS(FIELD, CUSTOM, NESTED)                                                   \
  FIELD(int64_t, hidden_size, 1408, "width of the tower's hidden states")                                     \
  FIELD(int64_t, intermediate_size, 6144, "width of the feed-forward")                                        \
  FIELD(int64_t, num_hidden_layers, 39, "transformer layers")                                                 \
  FIELD(int64_t, num_attention_heads, 16, "attention heads per layer")                                        \
  FIELD(int64_t, image_size, 224, "input height and width in pixels")                                         \
  FIELD(int64_t, patch_size, 14, "patch height and width in pixels")                                          \
  FIELD(std::string, hidden_act, "gelu", "feed-forward activation (Hugging Face name)")                       \
  FIELD(double, layer_norm_eps, 1e-6, "epsilon of every layernorm")                                           \
  FIELD(double, attention_dropout, 0.0, "dropout on attention weights")                                       \
  FIELD(double, initializer_range, 1e-10, "std of the normal init")                                           \
  FIELD(bool, qkv_bias, true, "biases on the query and value thirds of qkv (the key third stays zero)")

#define TESSERA_BLIP2_QFORMER_OPTIONS(FIELD, CUSTOM, NESTED)                                                  \
  FIELD(int64_t, vocab_size, 30522, "token vocabulary size (BERT's)")                                         \
  FIELD(int64_t, hidden_size, 768, "width of the hidden states")                                              \
  FIELD(int64_t, num_hidden_layers, 12, "transformer layers")                                                 \
  FIELD(int64_t, num_attention_heads, 12, "attention heads per layer")                                        \
  FIELD(int64_t, intermediate_size, 3072, "width of the feed-forwards")                                       \
  FIELD(std::string, hidden_act, "gelu", "feed-forward activation (Hugging Face name)")                       \
  FIELD(double, hidden_dropout_prob, 0.1, "dropout on embeddings and residual branches")                      \
  FIELD(double, attention_probs_dropout_prob, 0.1, "dropout on attention weights")                            \
  FIELD(int64_t, max_position_embeddings, 512, "longest text input in tokens")                                \
  FIELD(double, initializer_range, 0.02, "std of the normal init")                                            \
  FIELD(double, layer_norm_eps, 1e-12, "epsilon of every layernorm")                                          \
  FIELD(int64_t, pad_token_id, 0, "padding token id")                                                         \
  FIELD(int64_t, cross_attention_frequency, 2,                                                                \
        "layer i cross-attends to the image when i % cross_attention_frequency == 0")                        \
  FIELD(int64_t, encoder_hidden_size, 1408, "width of the image features the queries attend to")              \
  FIELD(bool, use_qformer_text_input, false,                                                                  \
        "text tokens share the layers with the queries (word/position embeddings, a text feed-forward)")

// image_token_index is CUSTOM: null in the file, -1 in the struct (blip2_options.cpp).
#define TESSERA_BLIP2_OPTIONS(FIELD, CUSTOM, NESTED)                                                          \
  NESTED(Blip2VisionOptions, vision, "vision_config", "the image tower (Blip2VisionConfig)")                  \
  NESTED(Blip2QFormerOptions, qformer, "qformer_config",                                                      \
         "the Querying Transformer (Blip2QFormerConfig); encoder_hidden_size follows the vision tower")        \
  NESTED(std::optional<LlamaOptions>, text, "text_config",                                                    \
         "the language model: a LlamaConfig, or any other model_type kept verbatim")                          \
  FIELD(int64_t, num_query_tokens, 32, "learned query tokens")                                                \
  CUSTOM(int64_t, image_token_index, -1, "image_token_index",                                                 \
         "the prompt's placeholder for one query output (-1 in the struct: none, config null)")               \
  FIELD(int64_t, image_text_hidden_size, 256, "width of the ITC embeddings (vision_projection, text_projection)") \
  FIELD(double, initializer_factor, 1.0, "kept for transformers' Blip2Config")                                \
  FIELD(double, initializer_range, 0.02, "std of the normal init of the queries and language_projection")
// clang-format on

namespace tessera::models {

/// The EVA-style image tower: pre-norm layers with a fused `qkv` projection, post-norm on every token.
struct Blip2VisionOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_BLIP2_VISION_OPTIONS)
  void validate(const std::string& where) const;
  static Blip2VisionOptions from_json(const nlohmann::json& j, const std::string& where = "vision_config",
                                      bool strict = false);
  nlohmann::json to_json() const;
  int64_t num_patches() const { return (image_size() / patch_size()) * (image_size() / patch_size()); }
};

/// The Querying Transformer: BERT post-norm layers; cross-attention to the image features in
/// every `cross_attention_frequency`-th layer; the query tokens take their own feed-forward.
struct Blip2QFormerOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_BLIP2_QFORMER_OPTIONS)
  void validate(const std::string& where) const;
  static Blip2QFormerOptions from_json(const nlohmann::json& j, const std::string& where = "qformer_config",
                                       bool strict = false);
  nlohmann::json to_json() const;
};

/// Blip2Config: the three parts, the learned queries and the heads around them.
struct Blip2Options {
  TESSERA_OPTIONS_FIELDS(TESSERA_BLIP2_OPTIONS)
  /// text_config when it is not a LLaMA (transformers' default is OPT's), kept verbatim to write back.
  std::string other_text_config;

  void validate(const std::string& where) const;
  static Blip2Options from_json(const nlohmann::json& j, const std::string& where = "blip-2 config",
                                bool strict = false);
  nlohmann::json to_json() const;
};

}  // namespace tessera::models
