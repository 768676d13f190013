// CLIPConfig <-> ClipOptions (transformers/models/clip/configuration_clip.py field names).
#include "tessera/models/clip/clip_options.h"

#include "tessera/core/json_config.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {

ClipTextOptions ClipTextOptions::from_json(const nlohmann::json& j, const std::string& where) {
  core::ConfigReader r(j, where);
  ClipTextOptions o;
  o.vocab_size(r.get_int("vocab_size", o.vocab_size()))
      .hidden_size(r.get_int("hidden_size", o.hidden_size()))
      .intermediate_size(r.get_int("intermediate_size", o.intermediate_size()))
      .num_hidden_layers(r.get_int("num_hidden_layers", o.num_hidden_layers()))
      .num_attention_heads(r.get_int("num_attention_heads", o.num_attention_heads()))
      .max_position_embeddings(r.get_int("max_position_embeddings", o.max_position_embeddings()))
      .hidden_act(r.get_string("hidden_act", o.hidden_act()))
      .layer_norm_eps(r.get_double("layer_norm_eps", o.layer_norm_eps()))
      .attention_dropout(r.get_double("attention_dropout", o.attention_dropout()))
      .pad_token_id(r.get_int("pad_token_id", o.pad_token_id()))
      .bos_token_id(r.get_int("bos_token_id", o.bos_token_id()))
      .eos_token_id(r.get_int("eos_token_id", o.eos_token_id()))
      .initializer_range(r.get_double("initializer_range", o.initializer_range()))
      .initializer_factor(r.get_double("initializer_factor", o.initializer_factor()));
  TORCH_CHECK_VALUE(o.hidden_size() > 0 && o.num_attention_heads() > 0 && o.hidden_size() % o.num_attention_heads() == 0,
                    where, ": hidden_size ", o.hidden_size(), " must be a positive multiple of num_attention_heads ",
                    o.num_attention_heads());
  TORCH_CHECK_VALUE(o.vocab_size() > 0 && o.max_position_embeddings() > 0 && o.intermediate_size() > 0 &&
                        o.num_hidden_layers() >= 0,
                    where, ": vocab_size, max_position_embeddings and intermediate_size must be positive");
  return o;
}

nlohmann::json ClipTextOptions::to_json() const {
  return {{"vocab_size", vocab_size()},
          {"hidden_size", hidden_size()},
          {"intermediate_size", intermediate_size()},
          {"num_hidden_layers", num_hidden_layers()},
          {"num_attention_heads", num_attention_heads()},
          {"max_position_embeddings", max_position_embeddings()},
          {"hidden_act", hidden_act()},
          {"layer_norm_eps", layer_norm_eps()},
          {"attention_dropout", attention_dropout()},
          {"pad_token_id", pad_token_id()},
          {"bos_token_id", bos_token_id()},
          {"eos_token_id", eos_token_id()},
          {"initializer_range", initializer_range()},
          {"initializer_factor", initializer_factor()},
          {"model_type", "clip_text_model"}};
}

ClipOptions ClipOptions::from_json(const nlohmann::json& j, const std::string& where) {
  core::ConfigReader r(j, where);
  std::string type = r.get_string("model_type", "clip");
  TORCH_CHECK_VALUE(type == "clip", where, ": model_type is '", type, "', expected 'clip'");
  ClipOptions o;
  o.text = ClipTextOptions::from_json(r.child("text_config").raw(), where + ".text_config");
  o.vision = VisionTransformerOptions::from_json(r.child("vision_config").raw(), where + ".vision_config");
  o.projection_dim(r.get_int("projection_dim", o.projection_dim()))
      .logit_scale_init_value(r.get_double("logit_scale_init_value", o.logit_scale_init_value()))
      .initializer_factor(r.get_double("initializer_factor", o.initializer_factor()));
  TORCH_CHECK_VALUE(o.projection_dim() > 0, where, ": projection_dim must be positive, got ", o.projection_dim());
  return o;
}

ClipOptions ClipOptions::from_file(const std::string& path) { return from_json(core::read_json_file(path), path); }

nlohmann::json ClipOptions::to_json() const {
  return {{"architectures", {"CLIPModel"}},
          {"model_type", "clip"},
          {"projection_dim", projection_dim()},
          {"logit_scale_init_value", logit_scale_init_value()},
          {"initializer_factor", initializer_factor()},
          {"text_config", text.to_json()},
          {"vision_config", vision.to_json()}};
}

}  // namespace tessera::models
