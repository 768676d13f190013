#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cstdint>

namespace tessera::ops {

bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight) {
  if (!weight.defined() || weight.scalar_type() != at::kBFloat16 || !weight.device().is_cpu() || weight.dim() != 2)
    return false;
  if (!x.device().is_cpu() || (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kFloat)) return false;
  if (c10::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  return x.dim() >= 1 && x.size(-1) == weight.size(1) && x.numel() / weight.size(1) <= kDecodeRows;
}

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(decode_linear_applies(x, weight), "decode_linear: needs a CPU bf16 weight [out, in] and at most ",
                    kDecodeRows, " rows of x without autograd; got x ", x.sizes(), " ", x.scalar_type(), ", weight ",
                    weight.sizes(), " ", weight.scalar_type());
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const int64_t rows = x.numel() / in;
  at::Tensor xf = x.reshape({rows, in}).to(at::kFloat).contiguous();
  at::Tensor w = weight.contiguous();
  at::Tensor y = at::empty({rows, out_features}, xf.options());
  if (rows > 0) {
    const float* xp = xf.data_ptr<float>();
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    float* yp = y.data_ptr<float>();
    const detail::DecodeKernel kernel = detail::decode_kernel(rows);
    // ~64 KiB of weights per task: enough to amortise the scheduling, many tasks per thread.
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(in, 1));
    at::parallel_for(0, out_features, grain,
                     [&](int64_t o0, int64_t o1) { kernel(xp, wp, yp, in, out_features, o0, o1); });
  }
  if (bias.defined()) y.add_(bias.to(at::kFloat));
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  return y.view(shape).to(out_dtype.value_or(x.scalar_type()));
}

}  // namespace tessera::ops
