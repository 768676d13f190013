// The weight-loading rules each family declares, and applying them to a checkpoint's keys.
#include "tessera/core/weight_loading.h"

#include "tessera/core/named_table.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <stdexcept>

namespace tessera::core {

namespace {
NamedTable<WeightLoading>& table() {
  static NamedTable<WeightLoading> t;
  return t;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool has_prefix(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

bool any_has_prefix(const std::set<std::string>& keys, const std::string& prefix) {
  for (const auto& k : keys) {
    if (has_prefix(k, prefix)) return true;
  }
  return false;
}
}  // namespace

WeightLoading WeightLoading::part(const std::string& prefix, const std::string& config_key) {
  WeightLoading w;
  w.key_aliases = {{"^" + prefix + "\\.", ""}};
  w.base_config_key = config_key;
  return w;
}

WeightLoading WeightLoading::base_model(const std::string& prefix) {
  WeightLoading w;
  w.base_model_prefix = prefix;
  return w;
}

bool register_weight_loading(const std::string& module_name, WeightLoading how) {
  for (const auto& [pattern, _] : how.key_aliases) std::regex check(pattern);  // a bad pattern fails here, not at load
  if (!table().add(module_name, std::move(how))) {
    throw std::logic_error("weight-loading rules for '" + module_name + "' declared twice");
  }
  return true;
}

WeightLoading weight_loading(const std::string& module_name) {
  auto found = table().get(module_name);
  return found ? *found : WeightLoading{};
}

std::vector<std::string> list_weight_loading() { return table().names(); }

TensorDict rename_for_module(TensorDict tensors, const std::set<std::string>& own, const WeightLoading& how,
                             const nlohmann::json& config, const std::string& where) {
  std::vector<std::pair<std::regex, std::string>> aliases;
  for (const auto& [pattern, repl] : how.key_aliases) aliases.emplace_back(std::regex(pattern), repl);
  TensorDict renamed;
  for (auto& [key, value] : tensors) {
    bool drop = false;
    for (const auto& s : how.ignore_suffixes) drop = drop || ends_with(key, s);
    if (drop) continue;
    std::string name = key;
    for (size_t i = 0; i < aliases.size() && !own.count(name); ++i) {
      std::string candidate = std::regex_replace(key, aliases[i].first, aliases[i].second,
                                                 std::regex_constants::format_first_only);
      if (candidate != key && own.count(candidate)) name = candidate;
    }
    renamed[name] = value;
  }
  const std::string prefix = how.base_model_prefix + ".";
  if (!how.base_model_prefix.empty() && !any_has_prefix(own, prefix)) {
    TensorDict base;
    for (auto& [key, value] : renamed) {
      if (has_prefix(key, prefix)) base[key.substr(prefix.size())] = value;
    }
    if (!base.empty()) renamed = std::move(base);  // the task head's keys are left out
  }
  for (const auto& [target, source] : how.tied_weights) {
    if (!renamed.count(target) && renamed.count(source)) renamed[target] = renamed.at(source);
  }
  const bool from_parent = !how.base_config_key.empty() && config.is_object() && config.contains(how.base_config_key);
  if (how.ignore_unexpected || from_parent) {
    TensorDict kept;
    for (auto& [key, value] : renamed) {
      if (own.count(key)) kept[key] = value;
    }
    TORCH_CHECK_VALUE(!kept.empty() || own.empty(), where, ": none of the module's weights are in this checkpoint",
                      from_parent ? " (its '" + how.base_config_key + "' part)" : std::string());
    renamed = std::move(kept);
  }
  return renamed;
}

}  // namespace tessera::core
