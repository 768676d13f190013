// LayerArgs flattening (for checkpointing and Python's pytree).
#include "tessera/nn/layer.h"

#include <c10/util/Exception.h>

namespace tessera::nn {

std::vector<at::Tensor> LayerArgs::tensors() const {
  return {mask, position_bias, context, context_mask, rope_cos, rope_sin};
}

LayerArgs LayerArgs::with_tensors(const std::vector<at::Tensor>& t) const {
  TORCH_CHECK_VALUE(t.size() == 6, "LayerArgs.with_tensors: expected 6 tensors, got ", t.size());
  LayerArgs out = *this;
  out.mask = t[0];
  out.position_bias = t[1];
  out.context = t[2];
  out.context_mask = t[3];
  out.rope_cos = t[4];
  out.rope_sin = t[5];
  return out;
}

}  // namespace tessera::nn
