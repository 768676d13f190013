// The BLIP-2 family in the registry: configs of the whole model, the Q-Former and the tower.
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/blip2/blip2_options.h"

namespace tessera::models {
namespace {

const bool registered = core::register_family_options<Blip2Options>("blip2");

// The tower and the Q-Former load from a Blip2* folder, as transformers' parts do.
const bool vision_weights = core::register_weight_loading("Blip2VisionModel", [] {
  core::WeightLoading w;
  w.key_aliases = {{"^vision_model\\.", ""}};
  w.base_config_key = "vision_config";
  return w;
}());
const bool qformer_weights = core::register_weight_loading("Blip2QFormerModel", [] {
  core::WeightLoading w;
  w.key_aliases = {{"^qformer\\.", ""}};
  w.base_config_key = "qformer_config";
  return w;
}());

}  // namespace
}  // namespace tessera::models
