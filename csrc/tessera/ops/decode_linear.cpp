#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tessera::ops {

bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight) {
  if (!weight.defined() || !weight.device().is_cpu() || weight.dim() != 2 || !x.device().is_cpu()) return false;
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  if (!bf16 && !(weight.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat)) return false;
  if (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kFloat) return false;
  if (c10::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) return false;
  if (at::autocast::is_autocast_enabled(at::kCPU)) return false;  // autocast picks the dtypes there
  return x.dim() >= 1 && x.size(-1) == weight.size(1) && x.numel() / weight.size(1) <= kDecodeRows;
}

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(decode_linear_applies(x, weight), "decode_linear: needs a CPU weight [out, in] (bf16, or fp32 with an fp32 x) and at most ",
                    kDecodeRows, " rows of x without autograd; got x ", x.sizes(), " ", x.scalar_type(), ", weight ",
                    weight.sizes(), " ", weight.scalar_type());
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const int64_t rows = x.numel() / in;
  const at::ScalarType result = out_dtype.value_or(x.scalar_type());
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  // A decoding step calls this ~7 times per layer: x is widened and the result rounded here, in
  // the same pass, rather than by tensor ops around the kernel (each costs microseconds).
  const at::Tensor xc = x.contiguous();
  thread_local std::vector<float> x_buffer, y_buffer;
  const float* xp = x.scalar_type() == at::kFloat ? xc.data_ptr<float>() : nullptr;
  if (xp == nullptr) {
    x_buffer.resize(rows * in);
    const at::BFloat16* src = xc.data_ptr<at::BFloat16>();
    for (int64_t i = 0; i < rows * in; ++i) x_buffer[i] = static_cast<float>(src[i]);
    xp = x_buffer.data();
  }
  const bool direct = result == at::kFloat;
  at::Tensor y = at::empty(shape, x.options().dtype(direct ? at::kFloat : result));
  float* yp = direct ? y.data_ptr<float>() : nullptr;
  if (!direct) {
    y_buffer.resize(rows * out_features);
    yp = y_buffer.data();
  }
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const at::Tensor w = weight.contiguous();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  const auto* w16 = bf16 ? reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>()) : nullptr;
  const float* w32 = bf16 ? nullptr : w.data_ptr<float>();
  const detail::DecodeKernel kernel16 = detail::decode_kernel(std::max<int64_t>(rows, 1), in);
  const detail::DecodeKernelF32 kernel32 = detail::decode_kernel_f32(std::max<int64_t>(rows, 1), in);
  const bool to_bf16 = result == at::kBFloat16;
  at::BFloat16* out_bf16 = !direct && to_bf16 ? y.data_ptr<at::BFloat16>() : nullptr;
  // ~64 KiB of weights per task: enough to amortise the scheduling, many tasks per thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(in, 1));
  if (rows > 0)
    at::parallel_for(0, out_features, grain, [&](int64_t o0, int64_t o1) {
      bf16 ? kernel16(xp, w16, yp, in, out_features, o0, o1) : kernel32(xp, w32, yp, in, out_features, o0, o1);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = o0; o < o1; ++o) {
          float& v = yp[r * out_features + o];
          if (bp) v += bp[o];
          if (out_bf16) out_bf16[r * out_features + o] = at::BFloat16(v);  // rounds to nearest even
        }
    });
  if (!direct && !to_bf16) y.copy_(at::from_blob(yp, shape, at::kFloat));  // fp16 or fp64 asked for
  return y;
}

}  // namespace tessera::ops
