// MAE configuration (He et al. 2021) with the names and defaults of transformers' ViTMAEConfig
// (ViT-B/16 encoder, 8-layer 512-wide decoder). Each field is declared once in visit_fields.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>

namespace tessera::models {

struct MaeOptions {
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
  TORCH_ARG(bool, qkv_bias) = true;
  TORCH_ARG(int64_t, decoder_num_attention_heads) = 16;
  TORCH_ARG(int64_t, decoder_hidden_size) = 512;
  TORCH_ARG(int64_t, decoder_num_hidden_layers) = 8;
  TORCH_ARG(int64_t, decoder_intermediate_size) = 2048;
  /// Fraction of patches hidden from the encoder.
  TORCH_ARG(double, mask_ratio) = 0.75;
  /// Regress per-patch normalised pixels (mean 0, variance 1 in each patch).
  TORCH_ARG(bool, norm_pix_loss) = false;

 public:
  template <class V>
  void visit_fields(V&& v) {
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
    v("qkv_bias", qkv_bias());
    v("decoder_num_attention_heads", decoder_num_attention_heads());
    v("decoder_hidden_size", decoder_hidden_size());
    v("decoder_num_hidden_layers", decoder_num_hidden_layers());
    v("decoder_intermediate_size", decoder_intermediate_size());
    v("mask_ratio", mask_ratio());
    v("norm_pix_loss", norm_pix_loss());
  }
  void validate(const std::string& where) const;
  /// `strict` rejects unknown keys (tessera's variant files and overrides; HF configs are lenient).
  static MaeOptions from_json(const nlohmann::json& j, const std::string& where = "vit_mae config",
                              bool strict = false);
  static MaeOptions from_file(const std::string& path);
  nlohmann::json to_json() const;
  int64_t grid() const { return image_size() / patch_size(); }
  int64_t num_patches() const { return grid() * grid(); }
};

}  // namespace tessera::models
