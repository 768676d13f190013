// Config fields written once: an Options struct lists its fields in `visit_fields(v)` (key and
// TORCH_ARG reference), and these templates derive reading, writing and the unknown-key check.
///   struct FooOptions {
///     TORCH_ARG(int64_t, hidden_size) = 768;
///     template <class V> void visit_fields(V&& v) { v("hidden_size", hidden_size()); }
///     void validate(const std::string& where) const;  // range checks, after reading
///   };
///   auto o = core::options_from_json<FooOptions>(j, "config.json");
#pragma once
#include "tessera/core/json_config.h"

#include <nlohmann/json.hpp>

#include <string>
#include <type_traits>
#include <vector>

namespace tessera::core {

namespace detail {
template <class T>
T read_field(const ConfigReader& r, const std::string& key, const T& fallback) {
  if constexpr (std::is_same_v<T, bool>) {
    return r.get_bool(key, fallback);
  } else if constexpr (std::is_integral_v<T>) {
    return r.get_int(key, fallback);
  } else if constexpr (std::is_floating_point_v<T>) {
    return r.get_double(key, fallback);
  } else {
    static_assert(std::is_same_v<T, std::string>, "config fields are bool, integers, floats or strings");
    return r.get_string(key, fallback);
  }
}
}  // namespace detail

/// The keys an Options struct declares.
template <class Options>
std::vector<std::string> field_names() {
  Options o;
  std::vector<std::string> names;
  o.visit_fields([&](const char* key, auto&) { names.emplace_back(key); });
  return names;
}

/// Reads every declared field of `Options` from the object `j` (missing keys keep their default).
/// `strict` rejects keys that are not fields (tessera's own files; HF configs are read leniently),
/// with `extra_keys` allowed besides (e.g. nested configs, model_type).
template <class Options>
Options options_from_json(const json& j, const std::string& where, bool strict = false,
                          const std::vector<std::string>& extra_keys = {}) {
  ConfigReader r(j, where);
  if (strict) {
    std::vector<std::string> known = field_names<Options>();
    known.insert(known.end(), extra_keys.begin(), extra_keys.end());
    r.reject_unknown(known);
  }
  Options o;
  o.visit_fields([&](const char* key, auto& field) { field = detail::read_field(r, key, field); });
  o.validate(where);
  return o;
}

/// The declared fields as a JSON object.
template <class Options>
json options_to_json(const Options& options) {
  Options o = options;  // visit_fields hands out references
  json j = json::object();
  o.visit_fields([&](const char* key, auto& field) { j[key] = field; });
  return j;
}

}  // namespace tessera::core
