// BEiT configuration (Bao et al. 2021) with the names and defaults of transformers' BeitConfig
// (ViT-B/16, 8192 visual tokens). Each field is declared once, in the table below
// (core/config_fields.h).
#pragma once
#include "tessera/core/config_fields.h"

#include <nlohmann/json_fwd.hpp>

#include <string>

// clang-format off
#define TESSERA_BEIT_OPTIONS(FIELD, CUSTOM, NESTED)                                                           \
  FIELD(int64_t, vocab_size, 8192, "size of the visual-token vocabulary the LM head predicts")                \
  FIELD(int64_t, hidden_size, 768, "width of the hidden states")                                              \
  FIELD(int64_t, num_hidden_layers, 12, "transformer layers")                                                 \
  FIELD(int64_t, num_attention_heads, 12, "attention heads per layer")                                        \
  FIELD(int64_t, intermediate_size, 3072, "width of the feed-forward")                                        \
  FIELD(std::string, hidden_act, "gelu", "feed-forward activation (Hugging Face name)")                       \
  FIELD(double, hidden_dropout_prob, 0.0, "dropout on embeddings and residual branches")                      \
  FIELD(double, attention_probs_dropout_prob, 0.0, "dropout on attention weights")                            \
  FIELD(double, initializer_range, 0.02, "std of the normal init")                                            \
  FIELD(double, layer_norm_eps, 1e-12, "epsilon of every layernorm")                                          \
  FIELD(int64_t, image_size, 224, "input height and width in pixels")                                         \
  FIELD(int64_t, patch_size, 16, "patch height and width in pixels")                                          \
  FIELD(int64_t, num_channels, 3, "input image channels")                                                     \
  FIELD(bool, use_mask_token, false, "a learned token that replaces masked patches (bool_masked_pos)")        \
  FIELD(bool, use_absolute_position_embeddings, false, "learned absolute position embeddings")                \
  FIELD(bool, use_relative_position_bias, false, "a relative position bias table in every layer")             \
  FIELD(bool, use_shared_relative_position_bias, false, "one relative position bias table shared by all layers") \
  FIELD(double, layer_scale_init_value, 0.1, "initial layer-scale value (lambda_1, lambda_2); 0 disables it") \
  FIELD(double, drop_path_rate, 0.1, "stochastic depth of the last layer; layer i gets rate * i / (layers - 1)") \
  FIELD(bool, use_mean_pooling, true,                                                                         \
        "pool by a layernormed mean of the patch tokens instead of the final-layernormed CLS token")
// clang-format on

namespace tessera::models {

struct BeitOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_BEIT_OPTIONS)
  void validate(const std::string& where) const;
  /// `strict` rejects unknown keys (tessera's variant files and overrides; HF configs are lenient).
  static BeitOptions from_json(const nlohmann::json& j, const std::string& where = "beit config",
                               bool strict = false);
  static BeitOptions from_file(const std::string& path);
  nlohmann::json to_json() const;
  int64_t grid() const { return image_size() / patch_size(); }
  int64_t num_patches() const { return grid() * grid(); }
};

}  // namespace tessera::models
