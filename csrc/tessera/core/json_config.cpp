// Typed access to Hugging Face style config.json files with precise error messages.
#include "tessera/core/json_config.h"

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
  for (auto it = j_->begin(); it != j_->end(); ++it) {
    bool ok = false;
    for (const auto& k : known) ok = ok || it.key() == k;
    if (ok) continue;
    std::string valid;
    for (const auto& k : known) valid += (valid.empty() ? "" : ", ") + k;
    TORCH_CHECK_VALUE(false, where_, ": unknown key '", it.key(), "' (valid keys: ", valid, ")");
  }
}

}  // namespace tessera::core
