// Registry of named model configurations ("ViT-B-32", ...), like open_clip's and timm's factories:
// each name maps to a family and a Hugging Face style config JSON. The variants are JSON files,
// one per name, in models/<family>/configs/, read at run time (load_config_dir: Python loads the
// shipped ones at import; add_model_config adds a user's); each family registers a strict
// validator for them and for overrides (models/<family>/<family>_family.cpp).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <string>
#include <vector>

namespace tessera::core {

struct NamedConfig {
  std::string name;
  std::string family;  // "clip", ...
  std::string json;    // the HF config.json text
};

/// Adds a named config; registering a name twice is an error.
/// open_clip's names (ViT-B-32, EVA02-L-14-336, RN50x4): a letter or digit, then letters, digits,
/// '.', '_', '+' or '-'. A file `.json` or ` a .json` registered a name nobody could type.
bool usable_name(const std::string& name);
void register_config(NamedConfig config);
/// Reads `path` (a JSON object), checks it with `family`'s strict validator and registers it under
/// the file's stem. Returns the name.
std::string load_config_file(const std::string& path, const std::string& family);
/// The same for (path, family) pairs, all or none: every file is read, checked and named (a
/// usable, new name) before the first is registered. Returns the names in order.
std::vector<std::string> load_config_files(const std::vector<std::pair<std::string, std::string>>& files);
/// Registers every `<root>/<family>/configs/<name>.json` (the source tree's csrc/tessera/models or
/// the installed share/tessera/models). Returns the names added, sorted.
std::vector<std::string> load_config_dir(const std::string& root);
/// The config for `name`; an unknown name lists the known ones.
const NamedConfig& find_config(const std::string& name);
/// All registered names, sorted.
std::vector<std::string> list_configs();

/// Checks a config of a family strictly: unknown keys are rejected with the valid ones listed.
using ConfigValidator = std::function<void(const nlohmann::json& config, const std::string& where)>;
/// Registers `family`'s validator; registering a family twice is an error, raised where the family
/// is used (a static initialiser must not throw).
void register_family(const std::string& family, ConfigValidator validate);
/// Registers `Options::from_json(config, where, strict=true)` as `family`'s validator; a family's
/// *_family.cpp calls it from a static initialiser.
template <class Options>
bool register_family_options(const std::string& family) {
  register_family(family, [](const nlohmann::json& j, const std::string& where) {
    Options::from_json(j, where, /*strict=*/true);
  });
  return true;
}
/// Runs `family`'s validator on `config` (errors say `where`).
void validate_config(const std::string& family, const nlohmann::json& config, const std::string& where);
/// All families with a validator, sorted.
std::vector<std::string> list_families();

}  // namespace tessera::core
