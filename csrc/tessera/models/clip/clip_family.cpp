// The CLIP family in the registry: its named variants are configs/*.json (compiled in by CMake);
// this registers how they, and overrides of them, are checked.
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/clip/clip_options.h"
#include "tessera/models/clip/clip_text.h"
#include "tessera/models/clip/clip_vision.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool clip_family_registered = core::register_family_options<ClipOptions>("clip");

// The towers load from a CLIP folder (transformers' CLIPVisionModel/CLIPTextModel), whose keys
// carry the tower's prefix (also transformers 4.x's own tower layout).
const bool clip_vision_weights = core::register_weight_loading<ClipVisionTransformerImpl>(
    "CLIPVisionTransformer", core::WeightLoading::part("vision_model", "vision_config"));
const bool text_weights = core::register_weight_loading<ClipTextTransformerImpl>(
    "CLIPTextTransformer", core::WeightLoading::part("text_model", "text_config"));

}  // namespace
}  // namespace tessera::models
