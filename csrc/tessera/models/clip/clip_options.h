// CLIP configuration (Radford et al. 2021) with the names and defaults of Hugging Face's
// CLIPVisionConfig, CLIPTextConfig and CLIPConfig. Each field is declared once, in the tables
// below (core/config_fields.h).
#pragma once
#include "tessera/core/config_fields.h"

#include <nlohmann/json_fwd.hpp>

#include <cmath>
#include <limits>

#include <string>

// clang-format off
#define TESSERA_CLIP_VISION_OPTIONS(FIELD, CUSTOM, NESTED)                                                    \
  FIELD(int64_t, hidden_size, 768, "width of the tower's hidden states")                                      \
  FIELD(int64_t, intermediate_size, 3072, "width of the feed-forward")                                        \
  FIELD(int64_t, num_hidden_layers, 12, "transformer layers")                                                 \
  FIELD(int64_t, num_attention_heads, 12, "attention heads per layer")                                        \
  FIELD(int64_t, num_channels, 3, "input image channels")                                                     \
  FIELD(int64_t, image_size, 224, "input height and width in pixels")                                         \
  FIELD(int64_t, patch_size, 32, "patch height and width in pixels")                                          \
  FIELD(std::string, hidden_act, "quick_gelu",                                                                \
        "feed-forward activation (Hugging Face name): quick_gelu for OpenAI CLIP, gelu for open_clip")        \
  FIELD(double, layer_norm_eps, 1e-5, "epsilon of every layernorm")                                           \
  FIELD(double, attention_dropout, 0.0, "dropout on attention weights")                                       \
  FIELD(double, initializer_range, 0.02, "std of the normal init")                                            \
  FIELD(double, initializer_factor, 1.0, "multiplier of the init std (HF initializer_factor)")

#define TESSERA_CLIP_TEXT_OPTIONS(FIELD, CUSTOM, NESTED)                                                      \
  FIELD(int64_t, vocab_size, 49408, "token vocabulary size")                                                  \
  FIELD(int64_t, hidden_size, 512, "width of the tower's hidden states")                                      \
  FIELD(int64_t, intermediate_size, 2048, "width of the feed-forward")                                        \
  FIELD(int64_t, num_hidden_layers, 12, "transformer layers")                                                 \
  FIELD(int64_t, num_attention_heads, 8, "attention heads per layer")                                         \
  FIELD(int64_t, max_position_embeddings, 77, "context length in tokens")                                     \
  FIELD(std::string, hidden_act, "quick_gelu", "feed-forward activation (Hugging Face name)")                 \
  FIELD(double, layer_norm_eps, 1e-5, "epsilon of every layernorm")                                           \
  FIELD(double, attention_dropout, 0.0, "dropout on attention weights")                                       \
  FIELD(int64_t, pad_token_id, 1, "padding token id")                                                         \
  FIELD(int64_t, bos_token_id, 49406, "start-of-text token id")                                               \
  FIELD(int64_t, eos_token_id, 49407,                                                                         \
        "pooled token: the first eos_token_id; the legacy value 2 pools at argmax(input_ids)")                \
  FIELD(double, initializer_range, 0.02, "std of the normal init")                                            \
  FIELD(double, initializer_factor, 1.0, "multiplier of the init std")

#define TESSERA_CLIP_OPTIONS(FIELD, CUSTOM, NESTED)                                                           \
  NESTED(ClipTextOptions, text, "text_config", "the text tower (CLIPTextConfig)")                             \
  NESTED(ClipVisionOptions, vision, "vision_config", "the image tower (CLIPVisionConfig)")                     \
  FIELD(int64_t, projection_dim, 512, "width of the shared image-text embedding space")                       \
  FIELD(double, logit_scale_init_value, 2.6592, "initial log of the logit scale: log(1 / 0.07)")              \
  FIELD(double, initializer_factor, 1.0, "multiplier of the init std of the projections")                     \
  CUSTOM(double, logit_bias_init_value, std::numeric_limits<double>::quiet_NaN(), "logit_bias_init_value",    \
         "SigLIP's learned logit bias, added to every logit, starts here (the paper: -10 with "                 \
         "logit_scale_init_value log(10)); null: none (CLIP)")
// clang-format on

namespace tessera::models {

/// CLIPVisionConfig (ViT-B/32 at 224 px).
struct ClipVisionOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_CLIP_VISION_OPTIONS)
  void validate(const std::string& where) const;
  /// `strict` rejects unknown keys (tessera's variant files and overrides; HF configs are lenient).
  static ClipVisionOptions from_json(const nlohmann::json& j, const std::string& where = "vision_config",
                                     bool strict = false);
  nlohmann::json to_json() const;
  int64_t num_patches() const { return (image_size() / patch_size()) * (image_size() / patch_size()); }
};

/// CLIPTextConfig.
struct ClipTextOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_CLIP_TEXT_OPTIONS)
  void validate(const std::string& where) const;
  static ClipTextOptions from_json(const nlohmann::json& j, const std::string& where = "text_config",
                                   bool strict = false);
  nlohmann::json to_json() const;
};

/// CLIPConfig: the two towers and the shared embedding space.
struct ClipOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_CLIP_OPTIONS)
  void validate(const std::string& where) const;
  /// A `logit_bias` parameter (SigLIP's): the logits gain it and return_loss is the sigmoid loss.
  bool has_logit_bias() const { return !std::isnan(logit_bias_init_value()); }
  /// From a CLIPConfig config.json dict (`text_config`, `vision_config`, `projection_dim`, ...).
  static ClipOptions from_json(const nlohmann::json& j, const std::string& where = "clip config",
                               bool strict = false);
  /// Reads `path` (a config.json file).
  static ClipOptions from_file(const std::string& path);
  /// The config.json dict that transformers' CLIPConfig reads back.
  nlohmann::json to_json() const;
};

}  // namespace tessera::models
