// Typed access to Hugging Face style config.json files with precise error messages.
#include "tessera/core/json_config.h"

#include <algorithm>
#include <cmath>

#include "tessera/core/atomic_file.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace tessera::core {

json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e99999
    TORCH_CHECK_VALUE(false, "invalid JSON in ", path, ": ", e.what());
  }
}

void write_json_file(const std::string& path, const json& j) {
  write_file_atomic(path, j.dump(2) + "\n");
}

namespace {
// Whether `v` nests at most `levels` deep; the recursion is bounded by `levels`.
bool nests_within(const json& v, int levels) {
  if (!v.is_structured()) return true;
  if (levels == 0) return false;
  for (const auto& child : v) {
    if (!nests_within(child, levels - 1)) return false;
  }
  return true;
}
constexpr int kMaxConfigLevels = 32;
}  // namespace

const std::vector<std::pair<std::string, std::string>>& attribute_aliases() {
  static const std::vector<std::pair<std::string, std::string>> aliases{{"image_token_id", "image_token_index"}};
  return aliases;
}

const std::vector<std::string>& transformers_file_keys() {
  static const std::vector<std::string> keys{
      "_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_bfloat16", "torchscript", "return_dict",
      "output_hidden_states", "output_attentions", "output_scores", "return_dict_in_generate", "use_cache",
      "pretraining_tp", "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
      "add_cross_attention", "cross_attention_hidden_size", "tie_encoder_decoder", "finetuning_task", "id2label",
      "label2id", "num_labels", "problem_type", "tokenizer_class", "prefix", "task_specific_params", "sep_token_id",
      "decoder_start_token_id", "tf_legacy_loss", "_attn_implementation", "attn_implementation", "max_length",
      "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature",
      "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
      "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "forced_bos_token_id",
      "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
      "begin_suppress_tokens", "projection_dim", "vocab_size", "image_seq_length", "use_decoder_only_language_model",
      "add_fpn", "auxiliary_channels", "auxiliary_concat_input", "auxiliary_loss_weight", "auxiliary_num_convs",
      "out_features", "out_indices", "pool_scales", "reshape_hidden_states", "semantic_loss_ignore_index",
      "stage_names", "use_auxiliary_head", "text_config_dict", "vision_config_dict", "dropout", "architectures",
      "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
  };
  return keys;
}

json with_attribute_aliases(const json& j, const std::string& where) {
  ConfigReader checked(j, where);  // an object within the nesting limit: copying it cannot overflow the stack
  json out = j;
  for (const auto& [alias, key] : attribute_aliases()) {
    if (!out.contains(alias)) continue;
    TORCH_CHECK_VALUE(!out.contains(key) || out[key] == out[alias], where, ": ", alias, " ", json_excerpt(out[alias]),
                      " and ", key, " ", json_excerpt(out[key]), " differ (transformers reads ", alias, " as ", key,
                      ")");
    out[key] = out[alias];
    out.erase(alias);
  }
  return out;
}

std::string json_excerpt(const json& v, size_t max_chars) {
  constexpr int kMaxLevels = 16;
  if (!nests_within(v, kMaxLevels)) {
    return std::string(v.is_array() ? "an array" : "an object") + " nested more than " +
           std::to_string(kMaxLevels) + " levels deep";
  }
  // Invalid UTF-8 cannot come from the parser, but replace it rather than throw from a message.
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > max_chars) text = text.substr(0, max_chars) + "...";
  return text;
}

namespace {
const json& empty_object() {
  static const json e = json::object();
  return e;
}
}  // namespace

ConfigReader::ConfigReader(const json& j, std::string where) : j_(&j), where_(std::move(where)) {
  TORCH_CHECK_VALUE(j.is_object(), where_, " must be a JSON object, got ", json_excerpt(j));
  TORCH_CHECK_VALUE(nests_within(j, kMaxConfigLevels), where_, " nests more than ", kMaxConfigLevels,
                    " levels deep (a config never does)");
}

bool ConfigReader::has(const std::string& key) const { return j_->contains(key) && !(*j_)[key].is_null(); }

int64_t ConfigReader::get_int(const std::string& key, int64_t fallback) const {
  if (!has(key)) return fallback;
  const auto& v = (*j_)[key];
  TORCH_CHECK_VALUE(v.is_number_integer(), where_, ": ", key, " must be an integer, got ", json_excerpt(v));
  // Past int64 nlohmann stores it unsigned, and get<int64_t> wrapped it (2^64 - 1 read as -1).
  TORCH_CHECK_VALUE(!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX), where_, ": ", key, " ",
                    json_excerpt(v), " does not fit in int64");
  return v.get<int64_t>();
}

double ConfigReader::get_double(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = (*j_)[key];
  TORCH_CHECK_VALUE(v.is_number(), where_, ": ", key, " must be a number, got ", json_excerpt(v));
  const double d = v.get<double>();
  // Rules every family shares, by the key's name: a norm epsilon (layer_norm_eps, rms_norm_eps)
  // of 0 or less turns every normalised output into NaN, silently; a dropout probability outside
  // [0, 1] fails only once training starts, with another name; a negative initializer_range fails
  // in the init without naming the key.
  const auto ends_with = [&](const char* tail) {
    const std::string t(tail);
    return key.size() >= t.size() && key.compare(key.size() - t.size(), t.size(), t) == 0;
  };
  TORCH_CHECK_VALUE(std::isfinite(d), where_, ": ", key, " must be a finite number, got ", d);
  TORCH_CHECK_VALUE(!(ends_with("_eps") || key == "eps") || d > 0, where_, ": ", key, " must be > 0, got ", d);
  TORCH_CHECK_VALUE(key.find("dropout") == std::string::npos || (d >= 0 && d <= 1), where_, ": ", key,
                    " is a probability: it must be in [0, 1], got ", d);
  TORCH_CHECK_VALUE(key.rfind("initializer_", 0) != 0 || d >= 0, where_, ": ", key, " must be >= 0, got ", d);
  return d;
}

bool ConfigReader::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const auto& v = (*j_)[key];
  TORCH_CHECK_VALUE(v.is_boolean(), where_, ": ", key, " must be true or false, got ", json_excerpt(v));
  return v.get<bool>();
}

std::string ConfigReader::get_string(const std::string& key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = (*j_)[key];
  TORCH_CHECK_VALUE(v.is_string(), where_, ": ", key, " must be a string, got ", json_excerpt(v));
  return v.get<std::string>();
}

std::vector<int64_t> ConfigReader::get_int_list(const std::string& key,
                                                const std::vector<int64_t>& fallback) const {
  if (!has(key)) return fallback;
  const auto& v = (*j_)[key];
  bool ok = v.is_number_integer() || v.is_array();
  for (const auto& x : v) ok = ok && x.is_number_integer();  // a scalar iterates as itself
  TORCH_CHECK_VALUE(ok, where_, ": ", key, " must be an integer or a list of integers, got ", json_excerpt(v));
  return v.is_array() ? v.get<std::vector<int64_t>>() : std::vector<int64_t>{v.get<int64_t>()};
}

ConfigReader ConfigReader::child(const std::string& key) const {
  return ConfigReader(has(key) ? (*j_)[key] : empty_object(), where_ + "." + key);
}

void ConfigReader::reject_unknown(const std::vector<std::string>& known) const {
  const auto& file_keys = transformers_file_keys();
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool ok = std::find(file_keys.begin(), file_keys.end(), it.key()) != file_keys.end();
    for (const auto& k : known) ok = ok || it.key() == k;
    if (ok) continue;
    std::string valid;
    for (const auto& k : known) valid += (valid.empty() ? "" : ", ") + k;
    TORCH_CHECK_VALUE(false, where_, ": unknown key '", it.key(), "' (valid keys: ", valid, ")");
  }
}

}  // namespace tessera::core
