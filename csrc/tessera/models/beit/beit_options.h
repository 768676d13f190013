// BEiT configuration (Bao et al. 2021) with the names and defaults of transformers' BeitConfig
// (ViT-B/16, 8192 visual tokens). Each field is declared once in visit_fields.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>

namespace tessera::models {

struct BeitOptions {
  /// Size of the visual-token vocabulary the LM head predicts.
  TORCH_ARG(int64_t, vocab_size) = 8192;
  TORCH_ARG(int64_t, hidden_size) = 768;
  TORCH_ARG(int64_t, num_hidden_layers) = 12;
  TORCH_ARG(int64_t, num_attention_heads) = 12;
  TORCH_ARG(int64_t, intermediate_size) = 3072;
  TORCH_ARG(std::string, hidden_act) = "gelu";
  TORCH_ARG(double, hidden_dropout_prob) = 0.0;
  TORCH_ARG(double, attention_probs_dropout_prob) = 0.0;
  TORCH_ARG(double, initializer_range) = 0.02;
  TORCH_ARG(double, layer_norm_eps) = 1e-12;
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, patch_size) = 16;
  TORCH_ARG(int64_t, num_channels) = 3;
  /// A learned token that replaces masked patches (`bool_masked_pos`).
  TORCH_ARG(bool, use_mask_token) = false;
  TORCH_ARG(bool, use_absolute_position_embeddings) = false;
  /// A relative position bias table in every layer.
  TORCH_ARG(bool, use_relative_position_bias) = false;
  /// One relative position bias table shared by all layers.
  TORCH_ARG(bool, use_shared_relative_position_bias) = false;
  /// Initial layer-scale value (lambda_1, lambda_2); 0 disables layer scale.
  TORCH_ARG(double, layer_scale_init_value) = 0.1;
  /// Stochastic depth of the last layer; layer i gets rate * i / (layers - 1).
  TORCH_ARG(double, drop_path_rate) = 0.1;
  /// Pool by a layernormed mean of the patch tokens instead of the final-layernormed CLS token.
  TORCH_ARG(bool, use_mean_pooling) = true;

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
    v("initializer_range", initializer_range());
    v("layer_norm_eps", layer_norm_eps());
    v("image_size", image_size());
    v("patch_size", patch_size());
    v("num_channels", num_channels());
    v("use_mask_token", use_mask_token());
    v("use_absolute_position_embeddings", use_absolute_position_embeddings());
    v("use_relative_position_bias", use_relative_position_bias());
    v("use_shared_relative_position_bias", use_shared_relative_position_bias());
    v("layer_scale_init_value", layer_scale_init_value());
    v("drop_path_rate", drop_path_rate());
    v("use_mean_pooling", use_mean_pooling());
  }
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
