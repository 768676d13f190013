// The BLIP-2 family in the registry: configs of the whole model, the Q-Former and the tower.
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/blip2/blip2_options.h"
#include "tessera/models/blip2/blip2_vision.h"
#include "tessera/models/blip2/qformer.h"

namespace tessera::models {
namespace {

const bool blip2_family_registered = core::register_family_options<Blip2Options>("blip2");

// The tower and the Q-Former load from a Blip2* folder, as transformers' parts do.
const bool blip2_vision_weights = core::register_weight_loading<Blip2VisionModelImpl>(
    "Blip2VisionModel", core::WeightLoading::part("vision_model", "vision_config"));
const bool qformer_weights = core::register_weight_loading<Blip2QFormerModelImpl>(
    "Blip2QFormerModel", core::WeightLoading::part("qformer", "qformer_config"));

}  // namespace
}  // namespace tessera::models
