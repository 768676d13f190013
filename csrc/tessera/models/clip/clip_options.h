// CLIP configuration (Radford et al. 2021) with the names and defaults of Hugging Face's
// CLIPVisionConfig, CLIPTextConfig and CLIPConfig. Each field is declared once in visit_fields.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>

namespace tessera::models {

/// CLIPVisionConfig (ViT-B/32 at 224 px).
struct ClipVisionOptions {
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
  template <class V>
  void visit_fields(V&& v) {
    v("hidden_size", hidden_size());
    v("intermediate_size", intermediate_size());
    v("num_hidden_layers", num_hidden_layers());
    v("num_attention_heads", num_attention_heads());
    v("num_channels", num_channels());
    v("image_size", image_size());
    v("patch_size", patch_size());
    v("hidden_act", hidden_act());
    v("layer_norm_eps", layer_norm_eps());
    v("attention_dropout", attention_dropout());
    v("initializer_range", initializer_range());
    v("initializer_factor", initializer_factor());
  }
  void validate(const std::string& where) const;
  /// `strict` rejects unknown keys (tessera's variant files and overrides; HF configs are lenient).
  static ClipVisionOptions from_json(const nlohmann::json& j, const std::string& where = "vision_config",
                                     bool strict = false);
  nlohmann::json to_json() const;
  int64_t num_patches() const { return (image_size() / patch_size()) * (image_size() / patch_size()); }
};

/// CLIPTextConfig.
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
  template <class V>
  void visit_fields(V&& v) {
    v("vocab_size", vocab_size());
    v("hidden_size", hidden_size());
    v("intermediate_size", intermediate_size());
    v("num_hidden_layers", num_hidden_layers());
    v("num_attention_heads", num_attention_heads());
    v("max_position_embeddings", max_position_embeddings());
    v("hidden_act", hidden_act());
    v("layer_norm_eps", layer_norm_eps());
    v("attention_dropout", attention_dropout());
    v("pad_token_id", pad_token_id());
    v("bos_token_id", bos_token_id());
    v("eos_token_id", eos_token_id());
    v("initializer_range", initializer_range());
    v("initializer_factor", initializer_factor());
  }
  void validate(const std::string& where) const;
  static ClipTextOptions from_json(const nlohmann::json& j, const std::string& where = "text_config",
                                   bool strict = false);
  nlohmann::json to_json() const;
};

/// CLIPConfig: the two towers and the shared embedding space.
struct ClipOptions {
  ClipTextOptions text;
  ClipVisionOptions vision;
  TORCH_ARG(int64_t, projection_dim) = 512;
  /// Initial log of the logit scale: log(1 / 0.07).
  TORCH_ARG(double, logit_scale_init_value) = 2.6592;
  TORCH_ARG(double, initializer_factor) = 1.0;

 public:
  template <class V>
  void visit_fields(V&& v) {
    v("projection_dim", projection_dim());
    v("logit_scale_init_value", logit_scale_init_value());
    v("initializer_factor", initializer_factor());
  }
  void validate(const std::string& where) const;
  /// From a CLIPConfig config.json dict (`text_config`, `vision_config`, `projection_dim`, ...).
  static ClipOptions from_json(const nlohmann::json& j, const std::string& where = "clip config",
                               bool strict = false);
  /// Reads `path` (a config.json file).
  static ClipOptions from_file(const std::string& path);
  /// The config.json dict that transformers' CLIPConfig reads back.
  nlohmann::json to_json() const;
};

}  // namespace tessera::models
