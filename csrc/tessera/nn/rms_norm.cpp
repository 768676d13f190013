// RMSNorm with the fp32 upcast that LLaMA checkpoints were trained with.
#include "tessera/nn/rms_norm.h"

#include <ATen/ATen.h>

namespace tessera::nn {

void RMSNormImpl::reset() { weight = register_parameter("weight", at::ones({dim_})); }

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * h.to(x.scalar_type());
}

}  // namespace tessera::nn
