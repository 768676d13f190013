// The CLIP family in the registry: its named variants are configs/*.json (compiled in by CMake);
// this registers how they, and overrides of them, are checked.
#include "tessera/core/registry.h"
#include "tessera/models/clip/clip_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool registered = core::register_family_options<ClipOptions>("clip");

}  // namespace
}  // namespace tessera::models
