// The weight-loading rules each family declares, and applying them to a checkpoint's keys.
#include "tessera/core/weight_loading.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include <map>
#include <mutex>
#include <regex>

namespace tessera::core {

namespace {
// Rules by module name (Python reads them so) and the name of each declared module class (the
// C++ loader reads them so); problems are kept by name, raised where the rules are read.
struct Table {
  std::mutex mutex;
  std::map<std::string, WeightLoading> rules;
  std::map<std::type_index, std::string> names;
  std::map<std::string, std::string> problems;
};

Table& loading_table() {
  static Table t;
  return t;
}

std::string problem_of(const WeightLoading& how) {
  for (const auto& [pattern, repl] : how.key_aliases) {
    try {
      std::regex check(pattern);
    } catch (const std::regex_error& e) {
      return "key alias '" + pattern + "' is not a regular expression (" + e.what() + ")";
    }
    if (repl.find_first_of("$\\") != std::string::npos) {
      return "key alias '" + pattern + "' -> '" + repl + "': the replacement must be plain text (no '$' or '\\')";
    }
  }
  return "";
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

bool register_weight_loading(std::type_index module_class, const std::string& module_name, WeightLoading how) {
  Table& t = loading_table();
  std::lock_guard<std::mutex> lock(t.mutex);
  std::string problem = module_name.empty() ? "an empty module name" : problem_of(how);
  if (problem.empty() && t.rules.count(module_name)) problem = "declared twice";
  if (problem.empty() && t.names.count(module_class)) {  // both names are then in doubt
    const std::string& first = t.names.at(module_class);
    problem = "its module class already has the rules of '" + first + "'";
    t.problems.emplace(first, "weight-loading rules of '" + first + "': its module class is declared again, as '" +
                                  module_name + "'");
  }
  if (!t.names.count(module_class)) t.names.emplace(module_class, module_name);
  if (!problem.empty()) {
    t.problems.emplace(module_name, "weight-loading rules of '" + module_name + "': " + problem);
    return false;
  }
  t.rules.emplace(module_name, std::move(how));
  return true;
}

WeightLoading weight_loading(const std::string& module_name) {
  Table& t = loading_table();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto problem = t.problems.find(module_name);
  TORCH_CHECK_VALUE(problem == t.problems.end(), problem == t.problems.end() ? "" : problem->second);
  auto found = t.rules.find(module_name);
  return found == t.rules.end() ? WeightLoading{} : found->second;
}

WeightLoading weight_loading(const torch::nn::Module& module) {
  std::string name;
  {
    Table& t = loading_table();
    std::lock_guard<std::mutex> lock(t.mutex);
    auto found = t.names.find(std::type_index(typeid(module)));
    if (found == t.names.end()) return WeightLoading{};
    name = found->second;
  }
  return weight_loading(name);
}

std::vector<std::string> list_weight_loading() {
  Table& t = loading_table();
  std::lock_guard<std::mutex> lock(t.mutex);
  std::set<std::string> names;
  for (const auto& [name, _] : t.rules) names.insert(name);
  for (const auto& [name, _] : t.problems) names.insert(name);
  return {names.begin(), names.end()};
}

TensorDict rename_for_module(TensorDict tensors, const std::set<std::string>& own, const WeightLoading& how,
                             const nlohmann::json& config, const std::string& where) {
  const std::string problem = problem_of(how);  // rules given directly, not declared
  TORCH_CHECK_VALUE(problem.empty(), where, ": ", problem);
  std::vector<std::pair<std::regex, std::string>> aliases;
  for (const auto& [pattern, repl] : how.key_aliases) aliases.emplace_back(std::regex(pattern), repl);
  TensorDict renamed;
  for (auto& [key, value] : tensors) {
    bool drop = false;  // ".position_ids" drops "position_ids" too, as the Python loader does
    for (const auto& s : how.ignore_suffixes) drop = drop || ends_with("." + key, s);
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
    if (!base.empty()) {
      std::set<std::string> head;
      for (const auto& [key, _] : renamed) {
        if (!has_prefix(key, prefix)) head.insert(key.substr(0, key.find('.')));
      }
      std::string parts;
      for (const auto& h : head) parts += (parts.empty() ? "" : ", ") + h;
      if (!head.empty()) {
        TORCH_WARN(where, ": loading its '", how.base_model_prefix, "' part; its ", parts,
                   " weights are not used (a task head)");
      }
      renamed = std::move(base);
    }
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
