// Options of the pre-LN vision transformer, with the defaults and names of Hugging Face's
// CLIPVisionConfig (ViT-B/32 at 224 px).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>

namespace tessera::models {

struct VisionTransformerOptions {
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, num_channels) = 3;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 32;
  /// Hugging Face activation name (quick_gelu for OpenAI CLIP, gelu for open_clip models).
  TORCH_ARG(std::string, hidden_act) = "quick_gelu";
  TORCH_ARG(double, layer_norm_eps) = 1e-5;
  TORCH_ARG(double, attention_dropout) = 0.0;
  /// Std of the normal init (HF initializer_range) and its multiplier (initializer_factor).
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, initializer_factor) = 1.0;

 public:
  /// Reads a CLIPVisionConfig dict (keys as in config.json's `vision_config`).
  static VisionTransformerOptions from_json(const nlohmann::json& j, const std::string& where = "vision_config");
  nlohmann::json to_json() const;
  int64_t num_patches() const { return (image_size() / patch_size()) * (image_size() / patch_size()); }
};

}  // namespace tessera::models
