// The MAE family in the registry: its named variants are configs/*.json (compiled in by CMake);
// this registers how they, and overrides of them, are checked.
#include "tessera/core/registry.h"
#include "tessera/core/weight_loading.h"
#include "tessera/models/mae/mae_model.h"
#include "tessera/models/mae/mae_options.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

const bool mae_family_registered = core::register_family_options<MaeOptions>("mae");

// The encoder loads from a pretraining checkpoint (its `vit.*` part), as transformers'
// base_model_prefix does; older checkpoints name the decoder's layers decoder_layers.
const bool mae_base_weights =
    core::register_weight_loading<MaeModelImpl>("ViTMAEModel", core::WeightLoading::base_model("vit"));
core::WeightLoading decoder_layers() {
  core::WeightLoading w;
  w.key_aliases = {{"^decoder\\.decoder_layers\\.", "decoder.decoder_encoder.layer."}};
  return w;
}
const bool pretraining_weights =
    core::register_weight_loading<MaeForPreTrainingImpl>("ViTMAEForPreTraining", decoder_layers());

}  // namespace
}  // namespace tessera::models
