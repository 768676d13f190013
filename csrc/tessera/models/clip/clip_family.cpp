// The CLIP family in the registry: its named variants are configs/*.json (compiled in by CMake);
// this registers how they, and overrides of them, are checked.
#include "tessera/core/registry.h"
#include "tessera/models/clip/clip_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool registered = [] {
  core::register_family("clip", [](const nlohmann::json& j, const std::string& where) {
    ClipOptions::from_json(j, where, /*strict=*/true);
  });
  return true;
}();

}  // namespace
}  // namespace tessera::models
