// CLIPVisionConfig <-> VisionTransformerOptions.
#include "tessera/models/vit/vision_options.h"

#include "tessera/core/json_config.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {

VisionTransformerOptions VisionTransformerOptions::from_json(const nlohmann::json& j, const std::string& where) {
  core::ConfigReader r(j, where);
  VisionTransformerOptions o;
  o.hidden_size(r.get_int("hidden_size", o.hidden_size()))
      .intermediate_size(r.get_int("intermediate_size", o.intermediate_size()))
      .num_hidden_layers(r.get_int("num_hidden_layers", o.num_hidden_layers()))
      .num_attention_heads(r.get_int("num_attention_heads", o.num_attention_heads()))
      .num_channels(r.get_int("num_channels", o.num_channels()))
      .image_size(r.get_int("image_size", o.image_size()))
      .patch_size(r.get_int("patch_size", o.patch_size()))
      .hidden_act(r.get_string("hidden_act", o.hidden_act()))
      .layer_norm_eps(r.get_double("layer_norm_eps", o.layer_norm_eps()))
      .attention_dropout(r.get_double("attention_dropout", o.attention_dropout()))
      .initializer_range(r.get_double("initializer_range", o.initializer_range()))
      .initializer_factor(r.get_double("initializer_factor", o.initializer_factor()));
  TORCH_CHECK_VALUE(o.hidden_size() > 0 && o.num_attention_heads() > 0 && o.hidden_size() % o.num_attention_heads() == 0,
                    where, ": hidden_size ", o.hidden_size(), " must be a positive multiple of num_attention_heads ",
                    o.num_attention_heads());
  TORCH_CHECK_VALUE(o.patch_size() > 0 && o.image_size() % o.patch_size() == 0, where, ": image_size ", o.image_size(),
                    " must be a multiple of patch_size ", o.patch_size());
  TORCH_CHECK_VALUE(o.num_hidden_layers() >= 0 && o.intermediate_size() > 0 && o.num_channels() > 0, where,
                    ": layer counts and sizes must be positive");
  return o;
}

nlohmann::json VisionTransformerOptions::to_json() const {
  return {{"hidden_size", hidden_size()},
          {"intermediate_size", intermediate_size()},
          {"num_hidden_layers", num_hidden_layers()},
          {"num_attention_heads", num_attention_heads()},
          {"num_channels", num_channels()},
          {"image_size", image_size()},
          {"patch_size", patch_size()},
          {"hidden_act", hidden_act()},
          {"layer_norm_eps", layer_norm_eps()},
          {"attention_dropout", attention_dropout()},
          {"initializer_range", initializer_range()},
          {"initializer_factor", initializer_factor()},
          {"model_type", "clip_vision_model"}};
}

}  // namespace tessera::models
