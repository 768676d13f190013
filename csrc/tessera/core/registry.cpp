// Named-config registry: variant files read at run time, family validators registered by each
// family's static initialiser (models/<family>/<family>_family.cpp).
#include "tessera/core/registry.h"

#include "tessera/core/json_config.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "tessera/core/named_table.h"

namespace tessera::core {
namespace {
NamedTable<NamedConfig>& table() {
  static NamedTable<NamedConfig> t;
  return t;
}
NamedTable<ConfigValidator>& families() {
  static NamedTable<ConfigValidator> f;
  return f;
}
}  // namespace

void register_config(NamedConfig config) {
  const std::string name = config.name;
  TORCH_CHECK_VALUE(table().add(name, std::move(config)), "model config '", name, "' is registered twice");
}

std::string load_config_file(const std::string& path, const std::string& family) {
  const nlohmann::json j = read_json_file(path);
  TORCH_CHECK_VALUE(j.is_object(), path, ": a model config must be a JSON object");
  validate_config(family, j, path);
  const std::string name = std::filesystem::path(path).stem().string();
  register_config({name, family, j.dump()});
  return name;
}

std::vector<std::string> load_config_dir(const std::string& root) {
  namespace fs = std::filesystem;
  TORCH_CHECK_VALUE(fs::is_directory(root), "model config folder '", root, "' does not exist");
  std::vector<fs::path> files;
  for (const auto& family : fs::directory_iterator(root)) {
    const fs::path configs = family.path() / "configs";
    if (!fs::is_directory(configs)) continue;
    for (const auto& f : fs::directory_iterator(configs))
      if (f.path().extension() == ".json") files.push_back(f.path());
  }
  std::sort(files.begin(), files.end());  // a stable order: the same name twice fails the same way
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(load_config_file(f.string(), f.parent_path().parent_path().filename()));
  std::sort(names.begin(), names.end());
  return names;
}

const NamedConfig& find_config(const std::string& name) {
  const NamedConfig* c = table().find(name);  // configs are never replaced: the entry stays valid
  TORCH_CHECK_VALUE(c != nullptr, "unknown model name '", name, "' (known: ", table().known(), ")");
  return *c;
}

std::vector<std::string> list_configs() { return table().names(); }

void register_family(const std::string& family, ConfigValidator validate) {
  TORCH_CHECK_VALUE(families().add(family, std::move(validate)), "model family '", family, "' is registered twice");
}

void validate_config(const std::string& family, const nlohmann::json& config, const std::string& where) {
  auto validate = families().get(family);
  TORCH_CHECK_VALUE(validate.has_value(), where, ": unknown model family '", family, "'");
  (*validate)(config, where);
}

std::vector<std::string> list_families() { return families().names(); }

}  // namespace tessera::core
