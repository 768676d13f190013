// MAE configuration (He et al. 2021) with the names and defaults of transformers' ViTMAEConfig
// (ViT-B/16 encoder, 8-layer 512-wide decoder). Each field is declared once, in the table below
// (core/config_fields.h).
#pragma once
#include "tessera/core/config_fields.h"

#include <nlohmann/json_fwd.hpp>

#include <string>

// clang-format off
#define TESSERA_MAE_OPTIONS(FIELD, CUSTOM, NESTED)                                                            \
  FIELD(int64_t, hidden_size, 768, "width of the encoder's hidden states")                                    \
  FIELD(int64_t, num_hidden_layers, 12, "encoder layers")                                                     \
  FIELD(int64_t, num_attention_heads, 12, "attention heads per encoder layer")                                \
  FIELD(int64_t, intermediate_size, 3072, "width of the encoder's feed-forward")                              \
  FIELD(std::string, hidden_act, "gelu", "feed-forward activation (Hugging Face name)")                       \
  FIELD(double, hidden_dropout_prob, 0.0, "dropout on embeddings and residual branches")                      \
  FIELD(double, attention_probs_dropout_prob, 0.0, "dropout on attention weights")                            \
  FIELD(double, initializer_range, 0.02, "std of the normal init of linears and embeddings")                  \
  FIELD(double, layer_norm_eps, 1e-12, "epsilon of every layernorm")                                          \
  FIELD(int64_t, image_size, 224, "input height and width in pixels")                                         \
  FIELD(int64_t, patch_size, 16, "patch height and width in pixels")                                          \
  FIELD(int64_t, num_channels, 3, "input image channels")                                                     \
  FIELD(bool, qkv_bias, true, "biases on the query, key and value projections")                               \
  FIELD(int64_t, decoder_num_attention_heads, 16, "attention heads per decoder layer")                        \
  FIELD(int64_t, decoder_hidden_size, 512, "width of the decoder's hidden states")                            \
  FIELD(int64_t, decoder_num_hidden_layers, 8, "decoder layers")                                              \
  FIELD(int64_t, decoder_intermediate_size, 2048, "width of the decoder's feed-forward")                      \
  FIELD(double, mask_ratio, 0.75, "fraction of patches hidden from the encoder")                              \
  FIELD(bool, norm_pix_loss, false, "regress per-patch normalised pixels (mean 0, variance 1 in each patch)")
// clang-format on

namespace tessera::models {

struct MaeOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_MAE_OPTIONS)
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
