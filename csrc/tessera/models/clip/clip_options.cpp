// CLIPConfig <-> ClipOptions (transformers/models/clip/configuration_clip.py field names).
#include "tessera/models/clip/clip_options.h"

#include "tessera/core/config_fields.h"
#include "tessera/nn/activation.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {
void check_heads(const std::string& where, int64_t hidden_size, int64_t heads) {
  TORCH_CHECK_VALUE(hidden_size > 0 && heads > 0 && hidden_size % heads == 0, where, ": hidden_size ", hidden_size,
                    " must be a positive multiple of num_attention_heads ", heads);
}
}  // namespace

void ClipVisionOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  check_heads(where, hidden_size(), num_attention_heads());
  TORCH_CHECK_VALUE(patch_size() > 0 && image_size() > 0 && image_size() % patch_size() == 0, where, ": image_size ", image_size(),
                    " must be a positive multiple of patch_size ", patch_size());
  TORCH_CHECK_VALUE(num_hidden_layers() >= 0 && intermediate_size() > 0 && num_channels() > 0, where,
                    ": num_hidden_layers ", num_hidden_layers(), " must be >= 0, intermediate_size ", intermediate_size(),
                    " and num_channels ", num_channels(), " positive");
}

ClipVisionOptions ClipVisionOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  return core::options_from_json<ClipVisionOptions>(j, where, strict, {"model_type"});
}

nlohmann::json ClipVisionOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["model_type"] = "clip_vision_model";
  return j;
}

void ClipTextOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  check_heads(where, hidden_size(), num_attention_heads());
  TORCH_CHECK_VALUE(vocab_size() > 0 && max_position_embeddings() > 0 && intermediate_size() > 0 &&
                        num_hidden_layers() >= 0,
                    where, ": vocab_size ", vocab_size(), ", max_position_embeddings ", max_position_embeddings(),
                    " and intermediate_size ", intermediate_size(), " must be positive, num_hidden_layers ",
                    num_hidden_layers(), " >= 0");
}

ClipTextOptions ClipTextOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  return core::options_from_json<ClipTextOptions>(j, where, strict, {"model_type"});
}

nlohmann::json ClipTextOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["model_type"] = "clip_text_model";
  return j;
}

void ClipOptions::validate(const std::string& where) const {
  TORCH_CHECK_VALUE(projection_dim() > 0, where, ": projection_dim must be positive, got ", projection_dim());
}

ClipOptions ClipOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  core::ConfigReader r(j, where);
  std::string type = r.get_string("model_type", "clip");
  TORCH_CHECK_VALUE(type == "clip", where, ": model_type is '", type, "', expected 'clip'");
  ClipOptions o = core::options_from_json<ClipOptions>(
      j, where, strict, {"text_config", "vision_config", "model_type", "architectures", "logit_bias_init_value"});
  o.logit_bias_init_value(r.get_double("logit_bias_init_value", std::numeric_limits<double>::quiet_NaN()));
  TORCH_CHECK_VALUE(!o.has_logit_bias() || std::isfinite(static_cast<float>(o.logit_bias_init_value())), where,
                    ": logit_bias_init_value must be finite in fp32, got ", o.logit_bias_init_value());
  o.text = ClipTextOptions::from_json(r.child("text_config").raw(), where + ".text_config", strict);
  o.vision = ClipVisionOptions::from_json(r.child("vision_config").raw(), where + ".vision_config", strict);
  return o;
}

ClipOptions ClipOptions::from_file(const std::string& path) { return from_json(core::read_json_file(path), path); }

nlohmann::json ClipOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["architectures"] = {"CLIPModel"};
  j["model_type"] = "clip";
  j["text_config"] = text.to_json();
  j["vision_config"] = vision.to_json();
  if (has_logit_bias()) j["logit_bias_init_value"] = logit_bias_init_value();  // absent: CLIP's file as before
  return j;
}

}  // namespace tessera::models
