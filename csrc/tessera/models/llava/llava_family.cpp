// The LLaVA family in the registry (variants: configs/*.json, compiled in by CMake).
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/llava/llava_model.h"
#include "tessera/models/llava/llava_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool llava_family_registered = core::register_family_options<LlavaOptions>("llava");

// transformers' current layout (`model.*`, the head at the top) read into tessera's, the earlier
// one (language_model.model.*, language_model.lm_head.*) that transformers also reads.
core::WeightLoading layouts() {
  core::WeightLoading w;
  w.key_aliases = {{"^model\\.language_model\\.", "language_model.model."},
                   {"^lm_head\\.", "language_model.lm_head."},
                   {"^model\\.vision_tower\\.", "vision_tower."},
                   {"^model\\.multi_modal_projector\\.", "multi_modal_projector."}};
  return w;
}
const bool weights =
    core::register_weight_loading<LlavaForConditionalGenerationImpl>("LlavaForConditionalGeneration", layouts());

}  // namespace
}  // namespace tessera::models
