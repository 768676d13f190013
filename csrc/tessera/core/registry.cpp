// Named-config registry: variant files read at run time, family validators registered by each
// family's static initialiser (models/<family>/<family>_family.cpp).
#include "tessera/core/registry.h"

#include "tessera/core/json_config.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
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

bool usable_name(const std::string& name) {
  const auto plain = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  if (name.empty() || !plain(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return plain(c) || std::strchr("._+-", c); });
}

std::vector<std::string> load_config_files(const std::vector<std::pair<std::string, std::string>>& files) {
  std::vector<NamedConfig> staged;
  for (const auto& [path, family] : files) {
    const nlohmann::json j = read_json_file(path);
    TORCH_CHECK_VALUE(j.is_object(), path, ": a model config must be a JSON object");
    validate_config(family, j, path);
    const std::string name = std::filesystem::path(path).stem().string();
    TORCH_CHECK_VALUE(usable_name(name), path, ": '", name, "' is not a usable model name (a letter or digit, then ",
                      "letters, digits, '.', '_', '+' or '-')");
    const bool repeated = std::any_of(staged.begin(), staged.end(), [&](const NamedConfig& c) { return c.name == name; });
    TORCH_CHECK_VALUE(!repeated && table().find(name) == nullptr, "model config '", name, "' is registered twice (",
                      path, ")");
    staged.push_back({name, family, j.dump()});
  }
  std::vector<std::string> names;  // every file checked: none is registered unless all are
  for (auto& c : staged) {
    names.push_back(c.name);
    register_config(std::move(c));
  }
  return names;
}

std::string load_config_file(const std::string& path, const std::string& family) {
  return load_config_files({{path, family}}).front();
}

std::vector<std::string> load_config_dir(const std::string& root) {
  namespace fs = std::filesystem;
  TORCH_CHECK_VALUE(fs::is_directory(root), "model config folder '", root, "' does not exist");
  std::vector<fs::path> found;
  for (const auto& family : fs::directory_iterator(root)) {
    const fs::path configs = family.path() / "configs";
    if (!fs::is_directory(configs)) continue;
    for (const auto& f : fs::directory_iterator(configs))
      if (f.path().extension() == ".json") found.push_back(f.path());
  }
  std::sort(found.begin(), found.end());  // a stable order: the same name twice fails the same way
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& f : found) files.emplace_back(f.string(), f.parent_path().parent_path().filename().string());
  std::vector<std::string> names = load_config_files(files);
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
  if (!families().add(family, std::move(validate))) {  // raised where the family is used (named_table.h)
    families().refuse(family, "model family '" + family + "' is registered twice");
  }
}

void validate_config(const std::string& family, const nlohmann::json& config, const std::string& where) {
  if (auto why = families().refusal(family)) TORCH_CHECK_VALUE(false, where, ": ", *why);
  auto validate = families().get(family);
  TORCH_CHECK_VALUE(validate.has_value(), where, ": unknown model family '", family, "'");
  (*validate)(config, where);
}

std::vector<std::string> list_families() { return families().names(); }

}  // namespace tessera::core
