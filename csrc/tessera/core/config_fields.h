// Config fields written once. An Options struct lists its fields in one X-macro table, a row per
// field with its type, name (= JSON key), default and a one-line meaning; TESSERA_OPTIONS_FIELDS
// turns the table into the TORCH_ARG members (the builder API, `MaeOptions().hidden_size(64)`),
// `visit_fields(v)` (what the templates below read and write) and `describe_fields(d)` (what
// field_docs reports). Three kinds of row:
///   FIELD(type, name, default, meaning)        read and written by options_from_json/options_to_json
///   CUSTOM(type, name, default, key, meaning)  a member the struct's from_json/to_json handle by hand
///                                              (nullable, list or renamed keys); `key` is its JSON key
///   NESTED(type, name, key, meaning)           a sub-config member (`text_config`: ClipTextOptions)
/// Example:
///   #define TESSERA_FOO_OPTIONS(FIELD, CUSTOM, NESTED) FIELD(int64_t, hidden_size, 768, "width")
///   struct FooOptions {
///     TESSERA_OPTIONS_FIELDS(TESSERA_FOO_OPTIONS)
///     void validate(const std::string& where) const;  // range checks, after reading
///     nlohmann::json to_json() const;                  // field_docs reads the defaults from it
///   };
///   auto o = core::options_from_json<FooOptions>(j, "config.json");
/// A default holding a top-level comma needs parentheses (macro arguments split at commas).
#pragma once
#include "tessera/core/json_config.h"

#include <nlohmann/json.hpp>
#include <torch/arg.h>

#include <optional>
#include <string>
#include <type_traits>
#include <vector>

// Row expansions (the trailing underscore marks them internal to TESSERA_OPTIONS_FIELDS).
#define TESSERA_MEMBER_FIELD_(type, name, default_, meaning) TORCH_ARG(type, name) = default_;
#define TESSERA_MEMBER_CUSTOM_(type, name, default_, key, meaning) TORCH_ARG(type, name) = default_;
#define TESSERA_MEMBER_NESTED_(type, name, key, meaning) \
 public:                                                 \
  type name{};
#define TESSERA_VISIT_FIELD_(type, name, default_, meaning) v(#name, name());
#define TESSERA_SKIP_ROW_(...)
#define TESSERA_DESCRIBE_FIELD_(type, name, default_, meaning) d.field(#name, meaning, name());
#define TESSERA_DESCRIBE_CUSTOM_(type, name, default_, key, meaning) d.field(key, meaning, name());
#define TESSERA_DESCRIBE_NESTED_(type, name, key, meaning) d.nested(key, meaning, name);

/// The members, visit_fields and describe_fields of a field table (see the top of this file).
/// Leaves the struct's access at public.
#define TESSERA_OPTIONS_FIELDS(TABLE)                                                        \
  TABLE(TESSERA_MEMBER_FIELD_, TESSERA_MEMBER_CUSTOM_, TESSERA_MEMBER_NESTED_)               \
 public:                                                                                     \
  template <class V>                                                                         \
  void visit_fields(V&& v) {                                                                 \
    (void)v;                                                                                 \
    TABLE(TESSERA_VISIT_FIELD_, TESSERA_SKIP_ROW_, TESSERA_SKIP_ROW_)                        \
  }                                                                                          \
  template <class D>                                                                         \
  void describe_fields(D& d) const {                                                         \
    TABLE(TESSERA_DESCRIBE_FIELD_, TESSERA_DESCRIBE_CUSTOM_, TESSERA_DESCRIBE_NESTED_)       \
  }

namespace tessera::core {

/// One declared field: its JSON key (`text_config.hidden_size` inside a sub-config), its default
/// as the struct's to_json writes it, and its meaning.
struct FieldDoc {
  std::string key;
  json default_value;
  std::string meaning;
};

template <class Options>
std::vector<FieldDoc> field_docs(const std::string& prefix = "");

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

template <class T>
struct Unwrap {
  using type = T;
};
template <class T>
struct Unwrap<std::optional<T>> {  // Blip2Options::text: a LLaMA config or none
  using type = T;
};

/// describe_fields' receiver: defaults come from the default struct's JSON (what a config file
/// holds), or the member itself for a key that to_json leaves out at its default.
struct DocCollector {
  const json& defaults;
  std::string prefix;
  std::vector<FieldDoc>& out;

  template <class T>
  void field(const char* key, const char* meaning, const T& value) {
    json d = nullptr;
    if (defaults.contains(key)) {
      d = defaults.at(key);
    } else if constexpr (std::is_constructible_v<json, const T&>) {
      d = json(value);
    }
    out.push_back({prefix + key, std::move(d), meaning});
  }
  template <class T>
  void nested(const char* key, const char* meaning, const T&) {
    out.push_back({prefix + key, json::object(), meaning});
    for (auto& doc : field_docs<typename Unwrap<T>::type>(prefix + key + ".")) out.push_back(std::move(doc));
  }
};
}  // namespace detail

/// Every declared field of `Options` in table order, sub-configs' fields after their key.
template <class Options>
std::vector<FieldDoc> field_docs(const std::string& prefix) {
  const Options o{};
  const json defaults = o.to_json();
  std::vector<FieldDoc> out;
  detail::DocCollector d{defaults, prefix, out};
  o.describe_fields(d);
  return out;
}

/// field_docs as a JSON array of {key, default, meaning} (what Python's `config_fields()` reads).
template <class Options>
json field_docs_json() {
  json a = json::array();
  for (const auto& f : field_docs<Options>())
    a.push_back({{"key", f.key}, {"default", f.default_value}, {"meaning", f.meaning}});
  return a;
}

/// The keys visit_fields reads and writes (the FIELD rows).
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
