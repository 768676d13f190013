// LLaVA configuration (Liu et al. 2023) with the names and defaults of transformers' LlavaConfig:
// a CLIP vision_config, a LLaMA text_config, the image token, which vision layer(s) feed the
// projector and whether the class token is kept. `projector_type` (tessera's; transformers has
// the two-layer MLP only) picks a projector from the projector registry.
#pragma once
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/llama/llama_options.h"

#include <nlohmann/json_fwd.hpp>
#include <torch/arg.h>

#include <string>
#include <vector>

namespace tessera::models {

struct LlavaOptions {
  ClipVisionOptions vision;
  LlamaOptions text;
  TORCH_ARG(int64_t, image_token_index) = 32000;
  /// hidden_states indices of the vision tower (negative from the end; several are concatenated).
  TORCH_ARG(std::vector<int64_t>, vision_feature_layer) = std::vector<int64_t>{-2};
  /// default: drop the class token; full: keep it.
  TORCH_ARG(std::string, vision_feature_select_strategy) = "default";
  TORCH_ARG(std::string, projector_hidden_act) = "gelu";
  TORCH_ARG(bool, multimodal_projector_bias) = true;
  /// A registered projector: mlp2x_gelu (transformers' LlavaMultiModalProjector), linear, ...
  TORCH_ARG(std::string, projector_type) = "mlp2x_gelu";
  /// Image tokens per image of a projector that resamples (the resampler's learned queries);
  /// 0: one per vision feature.
  TORCH_ARG(int64_t, projector_num_queries) = 0;
  /// A projector's own settings (tessera's), as JSON text of an object: the `qformer` projector's
  /// Blip2QFormerConfig fields. "{}": none.
  TORCH_ARG(std::string, projector_config) = "{}";

 public:
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
