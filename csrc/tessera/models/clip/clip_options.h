// CLIP configuration (Radford et al. 2021) with the names and defaults of Hugging Face's
// CLIPTextConfig and CLIPConfig; the vision side is VisionTransformerOptions.
#pragma once
#include "tessera/models/vit/vision_options.h"

namespace tessera::models {

struct ClipTextOptions {
  TORCH_ARG(int64_t, vocab_size) = 49408;
  TORCH_ARG(int64_t, hidden_size) = 512;
  TORCH_ARG(int64_t, intermediate_size) = 2048;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 8;
  /// Context length (77 for CLIP).
  TORCH_ARG(int64_t, max_position_embeddings) = 77;
  TORCH_ARG(std::string, hidden_act) = "quick_gelu";
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  TORCH_ARG(double, attention_dropout) = 0.0;
  TORCH_ARG(int64_t, pad_token_id) = 1;
  TORCH_ARG(int64_t, bos_token_id) = 49406;
  /// The pooled token: the first `eos_token_id`; the legacy value 2 pools at argmax(input_ids).
  TORCH_ARG(int64_t, eos_token_id) = 49407;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, initializer_factor) = 1.0;

 public:
  static ClipTextOptions from_json(const nlohmann::json& j, const std::string& where = "text_config");
  nlohmann::json to_json() const;
};

struct ClipOptions {
  ClipTextOptions text;
  VisionTransformerOptions vision;
  TORCH_ARG(int64_t, projection_dim) = 512;
  /// Initial log of the logit scale: log(1 / 0.07).
  TORCH_ARG(double, logit_scale_init_value) = 2.6592;
  TORCH_ARG(double, initializer_factor) = 1.0;

 public:
  /// From a CLIPConfig config.json dict (`text_config`, `vision_config`, `projection_dim`, ...).
  static ClipOptions from_json(const nlohmann::json& j, const std::string& where = "clip config");
  /// Reads `path` (a config.json file).
  static ClipOptions from_file(const std::string& path);
  /// The config.json dict that transformers' CLIPConfig reads back.
  nlohmann::json to_json() const;
};

}  // namespace tessera::models
