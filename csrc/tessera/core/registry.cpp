// Named-config registry. Families register their variants from static initialisers in their
// own translation unit (see models/clip/clip_variants.cpp).
#include "tessera/core/registry.h"

#include <c10/util/Exception.h>

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
