// ViTMAEConfig <-> MaeOptions (transformers/models/vit_mae/configuration_vit_mae.py field names).
#include "tessera/models/mae/mae_options.h"

#include "tessera/core/config_fields.h"
#include "tessera/nn/activation.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {

void MaeOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  TORCH_CHECK_VALUE(hidden_size() > 0 && num_attention_heads() > 0 && hidden_size() % num_attention_heads() == 0,
                    where, ": hidden_size ", hidden_size(), " must be a positive multiple of num_attention_heads ",
                    num_attention_heads());
  TORCH_CHECK_VALUE(decoder_hidden_size() > 0 && decoder_num_attention_heads() > 0 &&
                        decoder_hidden_size() % decoder_num_attention_heads() == 0,
                    where, ": decoder_hidden_size ", decoder_hidden_size(),
                    " must be a positive multiple of decoder_num_attention_heads ", decoder_num_attention_heads());
  TORCH_CHECK_VALUE(patch_size() > 0 && image_size() > 0 && image_size() % patch_size() == 0, where, ": image_size ", image_size(),
                    " must be a positive multiple of patch_size ", patch_size());
  TORCH_CHECK_VALUE(hidden_size() % 4 == 0 && decoder_hidden_size() % 4 == 0, where,
                    ": hidden_size and decoder_hidden_size must be multiples of 4 (2-D sin-cos position embeddings)");
  TORCH_CHECK_VALUE(mask_ratio() >= 0.0 && mask_ratio() < 1.0, where, ": mask_ratio must be in [0, 1), got ",
                    mask_ratio());
  TORCH_CHECK_VALUE(num_hidden_layers() >= 0 && decoder_num_hidden_layers() >= 0 && intermediate_size() > 0 &&
                        decoder_intermediate_size() > 0 && num_channels() > 0,
                    where, ": layer counts and sizes must be positive");
}

MaeOptions MaeOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  core::ConfigReader r(j, where);
  const std::string type = r.get_string("model_type", "vit_mae");
  TORCH_CHECK_VALUE(type == "vit_mae", where, ": model_type is '", type, "', expected 'vit_mae'");
  return core::options_from_json<MaeOptions>(j, where, strict, {"model_type", "architectures"});
}

MaeOptions MaeOptions::from_file(const std::string& path) { return from_json(core::read_json_file(path), path); }

nlohmann::json MaeOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["architectures"] = {"ViTMAEForPreTraining"};
  j["model_type"] = "vit_mae";
  return j;
}

}  // namespace tessera::models
