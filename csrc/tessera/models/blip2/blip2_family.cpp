// The BLIP-2 family in the registry: configs of the whole model, the Q-Former and the tower.
#include "tessera/core/registry.h"
#include "tessera/models/blip2/blip2_options.h"

namespace tessera::models {
namespace {

const bool registered = core::register_family_options<Blip2Options>("blip2");

}  // namespace
}  // namespace tessera::models
