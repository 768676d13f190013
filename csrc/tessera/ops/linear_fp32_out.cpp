#include "tessera/ops/linear_fp32_out.h"

#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <vector>

namespace tessera::ops {

std::optional<at::Tensor> cuda_linear_fp32_out(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const at::ScalarType t = x.scalar_type();
  if (!x.is_cuda() || (t != at::kBFloat16 && t != at::kHalf)) return std::nullopt;
  if (weight.device() != x.device() || weight.scalar_type() != t || weight.dim() != 2) return std::nullopt;
  if (x.dim() < 1 || x.size(-1) != weight.size(1)) return std::nullopt;
  if (bias.defined() && (bias.device() != x.device() || bias.scalar_type() != t || bias.dim() != 1 ||
                         bias.size(0) != weight.size(0)))
    return std::nullopt;
  // Under autocast at::linear follows autocast's dtype; a tracked gradient needs ATen's op.
  if (at::autocast::is_autocast_enabled(at::kCUDA) || !own_kernel_may_take({x, weight, bias})) return std::nullopt;
  at::Tensor y = at::mm(x.reshape({-1, x.size(-1)}), weight.t(), at::kFloat);
  if (bias.defined()) y.add_(bias);
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return y.view(sizes);
}

}  // namespace tessera::ops
