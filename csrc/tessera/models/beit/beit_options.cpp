// BeitConfig <-> BeitOptions (transformers/models/beit/configuration_beit.py field names).
#include "tessera/models/beit/beit_options.h"

#include "tessera/core/config_fields.h"
#include "tessera/nn/activation.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {

void BeitOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  TORCH_CHECK_VALUE(hidden_size() > 0 && num_attention_heads() > 0 && hidden_size() % num_attention_heads() == 0,
                    where, ": hidden_size ", hidden_size(), " must be a positive multiple of num_attention_heads ",
                    num_attention_heads());
  TORCH_CHECK_VALUE(patch_size() > 0 && image_size() > 0 && image_size() % patch_size() == 0, where, ": image_size ", image_size(),
                    " must be a positive multiple of patch_size ", patch_size());
  TORCH_CHECK_VALUE(vocab_size() > 0, where, ": vocab_size (the visual-token codebook size) must be positive, got ",
                    vocab_size());
  TORCH_CHECK_VALUE(num_hidden_layers() >= 0 && intermediate_size() > 0 && num_channels() > 0, where,
                    ": layer counts and sizes must be positive");
  TORCH_CHECK_VALUE(drop_path_rate() >= 0.0 && drop_path_rate() < 1.0, where, ": drop_path_rate must be in [0, 1), got ",
                    drop_path_rate());
  TORCH_CHECK_VALUE(layer_scale_init_value() >= 0.0, where, ": layer_scale_init_value must be >= 0, got ",
                    layer_scale_init_value());
}

BeitOptions BeitOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  core::ConfigReader r(j, where);
  const std::string type = r.get_string("model_type", "beit");
  TORCH_CHECK_VALUE(type == "beit", where, ": model_type is '", type, "', expected 'beit'");
  return core::options_from_json<BeitOptions>(j, where, strict, {"model_type", "architectures"});
}

BeitOptions BeitOptions::from_file(const std::string& path) { return from_json(core::read_json_file(path), path); }

nlohmann::json BeitOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["architectures"] = {"BeitForMaskedImageModeling"};
  j["model_type"] = "beit";
  return j;
}

}  // namespace tessera::models
