// LlamaConfig <-> LlamaOptions (transformers/models/llama/configuration_llama.py field names).
#include "tessera/models/llama/llama_options.h"

#include "tessera/core/config_fields.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <vector>

namespace tessera::models {
namespace {

const char* const kRopeTypes[] = {"default", "linear", "dynamic", "llama3"};

nn::RopeScaling read_rope(const nlohmann::json& j, const std::string& where, int64_t max_positions) {
  nn::RopeScaling rope;
  // transformers 5: rope_parameters {rope_type, rope_theta, factor, ...}; before: rope_theta at the
  // top and rope_scaling {type | rope_type, factor, ...} (null = default).
  for (const char* key : {"rope_parameters", "rope_scaling"}) {  // null means the default; a list was ignored
    TORCH_CHECK_VALUE(!j.contains(key) || j[key].is_object() || j[key].is_null(), where, ": ", key,
                      " must be an object (or null), got ", j[key].dump().substr(0, 60));
  }
  // transformers 5 lets a non-empty rope_scaling replace rope_parameters whole (its theta then comes
  // from rope_scaling or the top-level rope_theta).
  const bool scaling = j.contains("rope_scaling") && j["rope_scaling"].is_object() && !j["rope_scaling"].empty();
  const bool v5 = !scaling && j.contains("rope_parameters") && j["rope_parameters"].is_object();
  const nlohmann::json params = scaling ? j["rope_scaling"] : v5 ? j["rope_parameters"] : nlohmann::json::object();
  const std::string at = where + (scaling ? ".rope_scaling" : ".rope_parameters");
  core::ConfigReader r(params, at);
  const bool own_theta = r.has("rope_theta");
  rope.theta = own_theta ? r.get_double("rope_theta", rope.theta)
                         : core::ConfigReader(j, where).get_double("rope_theta", rope.theta);
  rope.rope_type = r.has("rope_type") ? r.get_string("rope_type", "default") : r.get_string("type", "default");
  bool known = false;
  for (const char* t : kRopeTypes) known = known || rope.rope_type == t;
  TORCH_CHECK_VALUE(known, at, ": rope type '", rope.rope_type,
                    "' is not supported (default, linear, dynamic, llama3)");
  // What transformers requires of each type (a missing factor read as 1 scaled nothing, silently).
  std::vector<const char*> required;
  if (rope.rope_type != "default") required.push_back("factor");
  if (rope.rope_type == "llama3") required.insert(required.end(), {"low_freq_factor", "high_freq_factor"});
  for (const char* key : required) {
    TORCH_CHECK_VALUE(r.has(key), at, ": rope type '", rope.rope_type, "' needs '", key, "' (transformers refuses ",
                      "it without)");
  }
  rope.factor = r.get_double("factor", 1.0);
  rope.low_freq_factor = r.get_double("low_freq_factor", rope.low_freq_factor);
  rope.high_freq_factor = r.get_double("high_freq_factor", rope.high_freq_factor);
  rope.original_max_position_embeddings = r.get_int("original_max_position_embeddings", max_positions);
  TORCH_CHECK_VALUE(rope.rope_type == "default" || rope.factor > 0, at, ": factor must be positive, got ",
                    rope.factor);
  // theta is the base of the rotary frequencies theta^(-2i/d): at 0 or below they are inf or NaN,
  // and the attention scores garbage without an error.
  TORCH_CHECK_VALUE(rope.theta > 0, own_theta ? at : where, ": rope_theta must be > 0, got ",
                    rope.theta);
  return rope;
}

}  // namespace

void LlamaOptions::validate(const std::string& where) const {
  TORCH_CHECK_VALUE(hidden_size() > 0 && num_attention_heads() > 0, where,
                    ": hidden_size and num_attention_heads must be positive");
  TORCH_CHECK_VALUE(head_dim() > 0 || hidden_size() % num_attention_heads() == 0, where, ": hidden_size ",
                    hidden_size(), " is not a multiple of num_attention_heads ", num_attention_heads(),
                    " (set head_dim)");
  TORCH_CHECK_VALUE(num_attention_heads() % kv_heads() == 0, where, ": num_attention_heads ", num_attention_heads(),
                    " is not a multiple of num_key_value_heads ", kv_heads());
  TORCH_CHECK_VALUE(dim_per_head() % 2 == 0, where, ": head_dim ", dim_per_head(), " must be even (rotary)");
  TORCH_CHECK_VALUE(vocab_size() > 0 && intermediate_size() > 0 && num_hidden_layers() >= 0 &&
                        max_position_embeddings() > 0,
                    where, ": sizes must be positive");
  TORCH_CHECK_VALUE(hidden_act() == "silu", where, ": hidden_act '", hidden_act(), "' is not supported (silu)");
  // The embedding's padding row (transformers' padding_idx, which torch refuses past the table too).
  TORCH_CHECK_VALUE(pad_token_id() < vocab_size(), where, ": pad_token_id ", pad_token_id(),
                    " is not a token of the model (vocab_size ", vocab_size(), ")");
}

LlamaOptions LlamaOptions::from_json(const nlohmann::json& j_in, const std::string& where, bool strict) {
  (void)core::ConfigReader(j_in, where);  // an object of bounded depth, checked before the copy
  nlohmann::json j = j_in;
  // "eos_token_id": null is "no stop id" in transformers (generation runs to max_new_tokens), not
  // the default 2; every other null is the field's default.
  const bool no_stop_ids = j.is_object() && j.contains("eos_token_id") && j["eos_token_id"].is_null();
  for (auto it = j.begin(); it != j.end();) it = it.value().is_null() ? j.erase(it) : std::next(it);
  core::ConfigReader r(j, where);
  const std::string type = r.get_string("model_type", "llama");
  TORCH_CHECK_VALUE(type == "llama", where, ": model_type is '", type, "', expected 'llama'");
  if (strict) {
    std::vector<std::string> known = core::field_names<LlamaOptions>();
    known.insert(known.end(), {"model_type", "architectures", "num_key_value_heads", "head_dim", "pad_token_id",
                               "eos_token_id", "rope_theta", "rope_scaling", "rope_parameters"});
    r.reject_unknown(known);
  }
  LlamaOptions o;
  o.visit_fields([&](const char* key, auto& field) { field = core::detail::read_field(r, key, field); });
  o.num_key_value_heads(r.get_int("num_key_value_heads", 0));
  o.head_dim(r.get_int("head_dim", 0));
  o.pad_token_id(r.get_int("pad_token_id", -1));
  if (r.has("eos_token_id")) o.eos_token_ids(r.get_int_list("eos_token_id", {}));
  if (no_stop_ids) o.eos_token_ids({});
  o.rope(read_rope(j, where, o.max_position_embeddings()));
  o.validate(where);
  return o;
}

LlamaOptions LlamaOptions::from_file(const std::string& path) { return from_json(core::read_json_file(path), path); }

nlohmann::json LlamaOptions::to_json() const {
  nlohmann::json j = core::options_to_json(*this);
  j["num_key_value_heads"] = kv_heads();
  j["head_dim"] = dim_per_head();
  j["pad_token_id"] = pad_token_id() >= 0 ? nlohmann::json(pad_token_id()) : nlohmann::json(nullptr);
  j["eos_token_id"] = eos_token_ids().empty()       ? nlohmann::json(nullptr)
                      : eos_token_ids().size() == 1 ? nlohmann::json(eos_token_ids()[0])
                                                    : nlohmann::json(eos_token_ids());
  nlohmann::json rope_params = {{"rope_type", rope().rope_type}, {"rope_theta", rope().theta}};
  if (rope().rope_type != "default") rope_params["factor"] = rope().factor;
  if (rope().rope_type == "llama3") {
    rope_params["low_freq_factor"] = rope().low_freq_factor;
    rope_params["high_freq_factor"] = rope().high_freq_factor;
    rope_params["original_max_position_embeddings"] = rope().original_max_position_embeddings;
  }
  j["rope_parameters"] = rope_params;
  j["architectures"] = {"LlamaForCausalLM"};
  j["model_type"] = "llama";
  return j;
}

}  // namespace tessera::models
