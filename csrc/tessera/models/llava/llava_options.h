// LLaVA configuration (Liu et al. 2023) with the names and defaults of transformers' LlavaConfig:
// a CLIP vision_config, a LLaMA text_config, the image token, which vision layer(s) feed the
// projector and whether the class token is kept. `projector_type` (tessera's; transformers has
// the two-layer MLP only) picks a projector from the projector registry.
#pragma once
#include "tessera/core/config_fields.h"
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/llama/llama_options.h"

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

// CUSTOM rows are read and written by hand in llava_options.cpp (a list, a JSON object).
// clang-format off
#define TESSERA_LLAVA_OPTIONS(FIELD, CUSTOM, NESTED)                                                          \
  NESTED(ClipVisionOptions, vision, "vision_config", "the CLIP vision tower (CLIPVisionConfig)")              \
  NESTED(LlamaOptions, text, "text_config", "the language model (LlamaConfig)")                                \
  FIELD(int64_t, image_token_index, 32000, "the prompt's placeholder token for an image")                     \
  CUSTOM(std::vector<int64_t>, vision_feature_layer, std::vector<int64_t>{-2}, "vision_feature_layer",         \
         "hidden_states index of the vision tower, or a list concatenated (negative from the end)")           \
  FIELD(std::string, vision_feature_select_strategy, "default", "default: drop the class token; full: keep it") \
  FIELD(std::string, projector_hidden_act, "gelu", "activation between the projector's two linears")         \
  FIELD(bool, multimodal_projector_bias, true, "biases on the projector's linears")                           \
  FIELD(std::string, projector_type, "mlp2x_gelu",                                                            \
        "a registered projector: mlp2x_gelu (transformers' LlavaMultiModalProjector), linear, ...")          \
  FIELD(int64_t, projector_num_queries, 0,                                                                    \
        "image tokens per image of a projector that resamples (its learned queries); 0: one per feature")    \
  CUSTOM(std::string, projector_config, "{}", "projector_config",                                             \
         "a projector's own settings as a JSON object (the qformer projector's Blip2QFormerConfig fields)")
// clang-format on

namespace tessera::models {

struct LlavaOptions {
  TESSERA_OPTIONS_FIELDS(TESSERA_LLAVA_OPTIONS)
  void validate(const std::string& where) const;
  static LlavaOptions from_json(const nlohmann::json& j, const std::string& where = "llava config",
                                bool strict = false);
  nlohmann::json to_json() const;
  /// Width of the features the projector receives.
  int64_t vision_feature_dim() const {
    return vision.hidden_size() * static_cast<int64_t>(vision_feature_layer().size());
  }
  /// Image tokens per image.
  int64_t image_tokens() const {
    if (projector_num_queries() > 0) return projector_num_queries();
    return vision.num_patches() + (vision_feature_select_strategy() == "full" ? 1 : 0);
  }
};

}  // namespace tessera::models
