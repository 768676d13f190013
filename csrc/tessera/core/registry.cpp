// Named-config registry. Families register their variants from static initialisers in their
// own translation unit (see models/clip/clip_variants.cpp).
#include "tessera/core/registry.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <map>
#include <mutex>

namespace tessera::core {
namespace {
std::map<std::string, NamedConfig>& table() {
  static std::map<std::string, NamedConfig> t;
  return t;
}
std::mutex& table_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, ConfigValidator>& families() {
  static std::map<std::string, ConfigValidator> f;
  return f;
}
}  // namespace

void register_config(NamedConfig config) {
  std::lock_guard<std::mutex> lock(table_mutex());
  TORCH_CHECK_VALUE(!table().count(config.name), "model config '", config.name, "' is registered twice");
  std::string name = config.name;
  table().emplace(std::move(name), std::move(config));
}

const NamedConfig& find_config(const std::string& name) {
  std::lock_guard<std::mutex> lock(table_mutex());
  auto it = table().find(name);
  if (it == table().end()) {
    std::string known;
    for (const auto& [n, _] : table()) known += (known.empty() ? "" : ", ") + n;
    TORCH_CHECK_VALUE(false, "unknown model name '", name, "' (known: ", known, ")");
  }
  return it->second;
}

std::vector<std::string> list_configs() {
  std::lock_guard<std::mutex> lock(table_mutex());
  std::vector<std::string> names;
  for (const auto& [n, _] : table()) names.push_back(n);
  return names;
}

void register_family(const std::string& family, ConfigValidator validate) {
  std::lock_guard<std::mutex> lock(table_mutex());
  TORCH_CHECK_VALUE(!families().count(family), "model family '", family, "' is registered twice");
  families().emplace(family, std::move(validate));
}

void validate_config(const std::string& family, const nlohmann::json& config, const std::string& where) {
  ConfigValidator validate;
  {
    std::lock_guard<std::mutex> lock(table_mutex());
    auto it = families().find(family);
    TORCH_CHECK_VALUE(it != families().end(), where, ": unknown model family '", family, "'");
    validate = it->second;
  }
  validate(config, where);
}

std::vector<std::string> list_families() {
  std::lock_guard<std::mutex> lock(table_mutex());
  std::vector<std::string> names;
  for (const auto& [n, _] : families()) names.push_back(n);
  return names;
}

}  // namespace tessera::core
