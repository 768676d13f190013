// Linear layer (torch.nn.Linear) on tessera's call-time parameter slots.
#include "tessera/nn/linear.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias)
    : Module("Linear"), in_features(in), out_features(out), with_bias(bias) {
  reset();
}

void LinearImpl::reset() {
  // Families build under NoInitGuard and initialise every parameter once (init_weights).
  weight_ = add_parameter("weight", at::empty({out_features, in_features}));
  bias_ = with_bias ? add_parameter("bias", at::empty({out_features})) : Slot{};
  if (init_enabled()) reset_parameters();
}

void LinearImpl::reset_parameters() {
  at::NoGradGuard g;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight().uniform_(-bound, bound);  // kaiming_uniform_(a=sqrt(5)) reduces to this bound
  if (with_bias) bias().uniform_(-bound, bound);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const { return at::linear(x, weight(), bias()); }

}  // namespace tessera::nn
