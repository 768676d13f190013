// LayerNorm / RMSNorm on call-time parameter slots.
#include "tessera/nn/norm.h"

#include "tessera/ops/decode_elementwise.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace tessera::nn {

NormImpl::NormImpl(int64_t dim_, NormKind kind_, double eps_, bool bias_)
    : Module(kind_ == NormKind::layer_norm ? "LayerNorm" : "RMSNorm"),
      dim(dim_),
      kind(kind_),
      eps(eps_),
      with_bias(bias_ && kind_ == NormKind::layer_norm) {
  reset();
}

void NormImpl::reset() {
  weight_ = add_parameter("weight", std::vector<int64_t>{dim});
  bias_ = with_bias ? add_parameter("bias", std::vector<int64_t>{dim}) : Slot{};
  if (init_enabled()) reset_parameters();
}

void NormImpl::reset_parameters() {
  at::NoGradGuard g;
  weight().fill_(1.0);
  if (with_bias) bias().zero_();
}

at::Tensor NormImpl::forward(const at::Tensor& x) const {
  if (kind == NormKind::layer_norm) return at::layer_norm(x, {dim}, weight(), bias(), eps);
  if (x.dim() >= 1 && ops::decode_elementwise_applies(x, x.numel() / std::max<int64_t>(dim, 1), {weight()}))
    return ops::decode_rms_norm(x, weight(), eps);
  at::Tensor h = x.to(at::kFloat);
  h = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight() * h.to(x.scalar_type());
}

}  // namespace tessera::nn
