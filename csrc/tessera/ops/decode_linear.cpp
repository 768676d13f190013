#include "tessera/ops/decode_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cstdint>

namespace tessera::ops {
namespace {

#define TESSERA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
constexpr int64_t kLanes = 16;

inline float widen(uint16_t b) { return __builtin_bit_cast(float, static_cast<uint32_t>(b) << 16); }

/// out[r][o] = sum_i x[r][i] * W[o][i] for rows r < R (a compile-time count, so the
/// accumulators stay in registers) and the weight rows o in [o0, o1). Each weight row is read
/// once; lanes of 16 make the sum vectorise without reassociation flags.
template <int R>
TESSERA_CLONES void rows_kernel(const float* x, const uint16_t* w, float* out, int64_t in, int64_t out_stride,
                                int64_t o0, int64_t o1) {
  const int64_t body = in / kLanes * kLanes;
  for (int64_t o = o0; o < o1; ++o) {
    const uint16_t* row = w + o * in;
    float acc[R][kLanes] = {};
    for (int64_t i = 0; i < body; i += kLanes) {
      float wf[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) wf[l] = widen(row[i + l]);
      for (int r = 0; r < R; ++r)
        for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += x[r * in + i + l] * wf[l];
    }
    for (int r = 0; r < R; ++r) {
      float sum = 0;
      for (int64_t l = 0; l < kLanes; ++l) sum += acc[r][l];
      for (int64_t i = body; i < in; ++i) sum += x[r * in + i] * widen(row[i]);
      out[r * out_stride + o] = sum;
    }
  }
}

using Kernel = void (*)(const float*, const uint16_t*, float*, int64_t, int64_t, int64_t, int64_t);
constexpr Kernel kKernels[kDecodeRows] = {rows_kernel<1>, rows_kernel<2>, rows_kernel<3>, rows_kernel<4>,
                                          rows_kernel<5>, rows_kernel<6>, rows_kernel<7>, rows_kernel<8>};

}  // namespace

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
    const Kernel kernel = kKernels[rows - 1];
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
