// Blip2*Config <-> Blip2*Options (transformers/models/blip_2/configuration_blip_2.py field names).
#include "tessera/models/blip2/blip2_options.h"

#include "tessera/core/config_fields.h"
#include "tessera/nn/activation.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

void check_model_type(const nlohmann::json& j, const std::string& where, const std::string& expected) {
  core::ConfigReader r(j, where);
  const std::string type = r.get_string("model_type", expected);
  TORCH_CHECK_VALUE(type == expected, where, ": model_type is '", type, "', expected '", expected, "'");
}

void check_width(const std::string& where, int64_t hidden, int64_t heads, int64_t intermediate, int64_t layers) {
  TORCH_CHECK_VALUE(hidden > 0 && heads > 0 && hidden % heads == 0, where, ": hidden_size ", hidden,
                    " must be a positive multiple of num_attention_heads ", heads);
  TORCH_CHECK_VALUE(intermediate > 0 && layers >= 0, where, ": intermediate_size must be positive (got ",
                    intermediate, ") and num_hidden_layers >= 0 (got ", layers, ")");
}

}  // namespace

void Blip2VisionOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  check_width(where, hidden_size(), num_attention_heads(), intermediate_size(), num_hidden_layers());
  TORCH_CHECK_VALUE(patch_size() > 0 && image_size() > 0 && image_size() % patch_size() == 0, where, ": image_size ", image_size(),
                    " must be a positive multiple of patch_size ", patch_size());
}

Blip2VisionOptions Blip2VisionOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  check_model_type(j, where, "blip_2_vision_model");
  return core::options_from_json<Blip2VisionOptions>(j, where, strict, {"model_type", "architectures"});
}

nlohmann::json Blip2VisionOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["model_type"] = "blip_2_vision_model";
  return j;
}

void Blip2QFormerOptions::validate(const std::string& where) const {
  nn::check_activation(hidden_act(), where);
  check_width(where, hidden_size(), num_attention_heads(), intermediate_size(), num_hidden_layers());
  TORCH_CHECK_VALUE(cross_attention_frequency() > 0, where, ": cross_attention_frequency must be positive, got ",
                    cross_attention_frequency());
  TORCH_CHECK_VALUE(encoder_hidden_size() > 0, where, ": encoder_hidden_size must be positive, got ",
                    encoder_hidden_size());
  TORCH_CHECK_VALUE(vocab_size() > 0 && max_position_embeddings() > 0, where,
                    ": vocab_size and max_position_embeddings must be positive");
  TORCH_CHECK_VALUE(pad_token_id() >= 0 && pad_token_id() < vocab_size(), where, ": pad_token_id ", pad_token_id(),
                    " is outside the vocabulary of ", vocab_size());
  for (double p : {hidden_dropout_prob(), attention_probs_dropout_prob()})
    TORCH_CHECK_VALUE(p >= 0.0 && p < 1.0, where, ": dropout probabilities must be in [0, 1), got ", p);
}

Blip2QFormerOptions Blip2QFormerOptions::from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  check_model_type(j, where, "blip_2_qformer");
  return core::options_from_json<Blip2QFormerOptions>(j, where, strict, {"model_type", "architectures"});
}

nlohmann::json Blip2QFormerOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["model_type"] = "blip_2_qformer";
  return j;
}

void Blip2Options::validate(const std::string& where) const {
  TORCH_CHECK_VALUE(num_query_tokens() > 0, where, ": num_query_tokens must be positive, got ", num_query_tokens());
  TORCH_CHECK_VALUE(image_text_hidden_size() > 0, where, ": image_text_hidden_size must be positive, got ",
                    image_text_hidden_size());
  TORCH_CHECK_VALUE(image_token_index() >= -1, where, ": image_token_index must be a token id or null, got ",
                    image_token_index());
}

Blip2Options Blip2Options::from_json(const nlohmann::json& config, const std::string& where, bool strict) {
  const nlohmann::json j = core::with_attribute_aliases(config, where);  // image_token_id, as transformers
  check_model_type(j, where, "blip-2");
  core::ConfigReader r(j, where);
  if (strict) {
    r.reject_unknown({"model_type", "architectures", "vision_config", "qformer_config", "text_config",
                      "num_query_tokens", "image_token_index", "image_text_hidden_size", "initializer_factor",
                      "initializer_range", "use_decoder_only_language_model"});
  }
  TORCH_CHECK_VALUE(r.get_bool("use_decoder_only_language_model", true), where,
                    ": use_decoder_only_language_model is false; tessera's BLIP-2 drives a decoder-only LLaMA");
  Blip2Options o;
  const auto child = [&](const char* key) { return j.value(key, nlohmann::json::object()); };
  o.vision = Blip2VisionOptions::from_json(child("vision_config"), where + ".vision_config", strict);
  nlohmann::json q = child("qformer_config");
  // As transformers' Blip2Config: the queries attend to the vision tower's features.
  q["encoder_hidden_size"] = o.vision.hidden_size();
  o.qformer = Blip2QFormerOptions::from_json(q, where + ".qformer_config", strict);
  const nlohmann::json text = child("text_config");
  if (text.value("model_type", "llama") == "llama") {
    o.text = LlamaOptions::from_json(text, where + ".text_config", strict);
  } else {
    o.other_text_config = text.dump();
  }
  o.visit_fields([&](const char* key, auto& field) { field = core::detail::read_field(r, key, field); });
  const bool no_image_token = !j.contains("image_token_index") || j["image_token_index"].is_null();
  o.image_token_index(no_image_token ? -1 : r.get_int("image_token_index", -1));
  o.validate(where);
  return o;
}

nlohmann::json Blip2Options::to_json() const {
  nlohmann::json text_json = other_text_config.empty() ? nlohmann::json::object()
                                                       : nlohmann::json::parse(other_text_config);
  if (text) {
    text_json = text->to_json();
    text_json.erase("architectures");
  }
  nlohmann::json j = core::options_to_json(*this);
  j.update({{"model_type", "blip-2"},
            {"vision_config", vision.to_json()},
            {"qformer_config", qformer.to_json()},
            {"text_config", text_json},
            {"image_token_index", image_token_index() < 0 ? nlohmann::json(nullptr) : nlohmann::json(image_token_index())},
            {"use_decoder_only_language_model", true}});
  return j;
}

}  // namespace tessera::models
