// Registry of named model configurations ("ViT-B-32", ...), like open_clip's and timm's factories:
// each name maps to a family and a Hugging Face style config JSON.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

namespace tessera::core {

struct NamedConfig {
  std::string name;
  std::string family;  // "clip", ...
  std::string json;    // the HF config.json text
};

/// Adds a named config; registering a name twice is an error.
void register_config(NamedConfig config);
/// The config for `name`; an unknown name lists the known ones.
const NamedConfig& find_config(const std::string& name);
/// All registered names, sorted.
std::vector<std::string> list_configs();

}  // namespace tessera::core
