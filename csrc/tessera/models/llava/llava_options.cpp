// LlavaConfig <-> LlavaOptions (transformers/models/llava/configuration_llava.py).
#include "tessera/models/llava/llava_options.h"

#include "tessera/nn/activation.h"

#include "tessera/core/config_fields.h"
#include "tessera/models/llava/projector.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {

void LlavaOptions::validate(const std::string& where) const {
  TORCH_CHECK_VALUE(vision_feature_select_strategy() == "default" || vision_feature_select_strategy() == "full", where,
                    ": vision_feature_select_strategy must be 'default' or 'full', got '",
                    vision_feature_select_strategy(), "'");
  TORCH_CHECK_VALUE(!vision_feature_layer().empty(), where, ": vision_feature_layer is empty");
  const int64_t n = vision.num_hidden_layers();
  for (int64_t l : vision_feature_layer()) {
    TORCH_CHECK_VALUE((l < 0 && -l <= n) || (l > 0 && l <= n), where, ": vision_feature_layer ", l,
                      " is not a layer output of a ", n, "-layer vision tower (1..", n, " or -1..-", n, ")");
  }
  TORCH_CHECK_VALUE(image_token_index() >= 0, where, ": image_token_index must be >= 0");
  nn::check_activation(projector_hidden_act(), where, "projector_hidden_act");
  TORCH_CHECK_VALUE(projector_num_queries() >= 0, where, ": projector_num_queries must be >= 0, got ",
                    projector_num_queries());
  TORCH_CHECK_VALUE(projector_num_queries() == 0 || (projector_type() != "mlp2x_gelu" && projector_type() != "linear"),
                    where, ": projector_num_queries is for projectors that resample (resampler); '", projector_type(),
                    "' keeps one token per vision feature");
  TORCH_CHECK_VALUE(projector_type() != "resampler" || projector_num_queries() > 0, where,
                    ": projector_type 'resampler' needs projector_num_queries > 0 (its learned queries: the image "
                    "tokens per image)");
  check_projector_type(projector_type(), where);
}

LlavaOptions LlavaOptions::from_json(const nlohmann::json& config, const std::string& where, bool strict) {
  const nlohmann::json j = core::with_attribute_aliases(config, where);  // image_token_id, as transformers
  core::ConfigReader r(j, where);
  const std::string type = r.get_string("model_type", "llava");
  TORCH_CHECK_VALUE(type == "llava", where, ": model_type is '", type, "', expected 'llava'");
  if (strict) {
    r.reject_unknown({"model_type", "architectures", "vision_config", "text_config", "image_token_index",
                      "vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_act",
                      "multimodal_projector_bias", "projector_type", "projector_num_queries", "projector_config",
                      "image_seq_length",
                      "tie_word_embeddings"});
  }
  LlavaOptions o;
  o.vision = ClipVisionOptions::from_json(j.value("vision_config", nlohmann::json::object()), where + ".vision_config",
                                          strict);
  o.text = LlamaOptions::from_json(j.value("text_config", nlohmann::json::object()), where + ".text_config", strict);
  // transformers' LlavaConfig ties the LM head when either its own flag or text_config's says so.
  if (r.get_bool("tie_word_embeddings", false)) o.text.tie_word_embeddings(true);
  o.visit_fields([&](const char* key, auto& field) { field = core::detail::read_field(r, key, field); });
  if (r.has("vision_feature_layer")) o.vision_feature_layer(r.get_int_list("vision_feature_layer", {}));
  if (j.contains("projector_config")) {
    TORCH_CHECK_VALUE(j["projector_config"].is_object(), where, ".projector_config must be an object");
    o.projector_config(j["projector_config"].dump());
  }
  o.validate(where);
  return o;
}

nlohmann::json LlavaOptions::to_json() const {
  nlohmann::json text_json = text.to_json();
  text_json.erase("architectures");
  const auto& layers = vision_feature_layer();
  nlohmann::json j = core::options_to_json(*this);
  j.update({{"architectures", {"LlavaForConditionalGeneration"}},
            {"model_type", "llava"},
            {"vision_config", vision.to_json()},
            {"text_config", text_json},
            {"image_seq_length", image_tokens()},
            {"vision_feature_layer", layers.size() == 1 ? nlohmann::json(layers[0]) : nlohmann::json(layers)},
            {"tie_word_embeddings", text.tie_word_embeddings()}});
  if (projector_num_queries() == 0) j.erase("projector_num_queries");  // transformers' LlavaConfig has no such key
  if (projector_config() != "{}") j["projector_config"] = nlohmann::json::parse(projector_config());
  return j;
}

}  // namespace tessera::models
