// The LLaMA family in the registry: its named variants are configs/*.json (compiled in by CMake).
#include "tessera/core/registry.h"
#include "tessera/models/llama/llama_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool llama_family_registered = core::register_family_options<LlamaOptions>("llama");

}  // namespace
}  // namespace tessera::models
