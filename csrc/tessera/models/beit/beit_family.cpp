// The BEiT family in the registry: its named variants are configs/*.json (compiled in by CMake).
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/beit/beit_model.h"
#include "tessera/models/beit/beit_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool beit_family_registered = core::register_family_options<BeitOptions>("beit");

// The encoder loads from a pretraining checkpoint (its `beit.*` part), as transformers'
// base_model_prefix does.
const bool beit_base_weights =
    core::register_weight_loading<BeitModelImpl>("BeitModel", core::WeightLoading::base_model("beit"));

}  // namespace
}  // namespace tessera::models
