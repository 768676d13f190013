// The LLaVA family in the registry (variants: configs/*.json, compiled in by CMake).
#include "tessera/core/registry.h"
#include "tessera/models/llava/llava_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool registered = core::register_family_options<LlavaOptions>("llava");

}  // namespace
}  // namespace tessera::models
