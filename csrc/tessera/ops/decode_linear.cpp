#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tessera::ops {

namespace {

/// Rows of x a decoding kernel serves: CPU, fp32 or bf16, at most kDecodeRows, nothing that
/// own_kernel_may_take refuses, no autocast (whose dtypes at::linear follows).
bool rows_apply(const at::Tensor& x, int64_t in) {
  if (!x.device().is_cpu() || (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kFloat)) return false;
  if (!own_kernel_may_take({x}) || at::autocast::is_autocast_enabled(at::kCPU)) return false;
  return x.dim() >= 1 && in > 0 && x.size(-1) == in && x.numel() / in <= kDecodeRows;
}

/// x widened to fp32 rows and handed once to `prepare` (whose pointer reaches every kernel call),
/// the kernel over slices of the output features on the intra-op threads, then each output times
/// its row's scale (int8), plus the bias, rounded to the result dtype in the same pass. A decoding
/// step calls this ~7 times per layer: tensor ops around the kernel would cost more than the small
/// layers' GEMVs.
template <typename Prepare, typename Kernel>
at::Tensor run(const at::Tensor& x, int64_t in, int64_t out_features, const float* scale, const at::Tensor& bias,
               std::optional<at::ScalarType> out_dtype, const Prepare& prepare, const Kernel& kernel) {
  const int64_t rows = x.numel() / in;
  const at::ScalarType result = out_dtype.value_or(x.scalar_type());
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  const at::Tensor xc = x.contiguous();
  thread_local std::vector<float> x_buffer, y_buffer;
  const float* xp = x.scalar_type() == at::kFloat ? xc.data_ptr<float>() : nullptr;
  if (xp == nullptr) {
    x_buffer.resize(rows * in);
    const at::BFloat16* src = xc.data_ptr<at::BFloat16>();
    for (int64_t i = 0; i < rows * in; ++i) x_buffer[i] = static_cast<float>(src[i]);
    xp = x_buffer.data();
  }
  const float* prepared = prepare(xp, rows);
  const bool direct = result == at::kFloat;
  at::Tensor y = at::empty(shape, x.options().dtype(direct ? at::kFloat : result));
  float* yp = direct ? y.data_ptr<float>() : nullptr;
  if (!direct) {
    y_buffer.resize(rows * out_features);
    yp = y_buffer.data();
  }
  const at::Tensor b = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  at::BFloat16* out_bf16 = result == at::kBFloat16 ? y.data_ptr<at::BFloat16>() : nullptr;
  // ~64 KiB of weights per task: enough to amortise the scheduling, many tasks per thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / in);
  if (rows > 0)
    at::parallel_for(0, out_features, grain, [&](int64_t o0, int64_t o1) {
      kernel(xp, prepared, yp, o0, o1);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = o0; o < o1; ++o) {
          float& v = yp[r * out_features + o];
          if (scale) v *= scale[o];
          if (bp) v += bp[o];
          if (out_bf16) out_bf16[r * out_features + o] = at::BFloat16(v);  // rounds to nearest even
        }
    });
  if (!direct && !out_bf16) y.copy_(at::from_blob(yp, shape, at::kFloat));  // fp16 or fp64 asked for
  return y;
}

/// For the kernels that read x as it is (fp32 and int8 weights).
const float* as_is(const float*, int64_t) { return nullptr; }

}  // namespace

bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight) {
  if (!weight.defined() || !weight.device().is_cpu() || weight.dim() != 2) return false;
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  if (!bf16 && !(weight.scalar_type() == at::kFloat && x.scalar_type() == at::kFloat)) return false;
  if (!own_kernel_may_take({weight})) return false;
  return rows_apply(x, weight.size(1));
}

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(decode_linear_applies(x, weight), "decode_linear: needs a CPU weight [out, in] (bf16, or fp32 ",
                    "with an fp32 x) and at most ", kDecodeRows, " rows of x without autograd; got x ", x.sizes(), " ",
                    x.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type());
  const int64_t in = weight.size(1), out = weight.size(0), rows = std::max<int64_t>(x.numel() / in, 1);
  const at::Tensor w = weight.contiguous();
  if (w.scalar_type() == at::kBFloat16) {
    const auto* wp = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
    const detail::DecodeKernel k = detail::decode_kernel(rows, in);
    const auto split = [in](const float* xp, int64_t n) { return detail::decode_split_x(xp, n, in); };
    return run(x, in, out, nullptr, bias, out_dtype, split,
               [&](const float* xp, const float* xs, float* yp, int64_t o0, int64_t o1) {
                 k(xp, xs, wp, yp, in, out, o0, o1);
               });
  }
  const float* wp = w.data_ptr<float>();
  const detail::DecodeKernelF32 k = detail::decode_kernel_f32(rows, in);
  return run(x, in, out, nullptr, bias, out_dtype, as_is,
             [&](const float* xp, const float*, float* yp, int64_t o0, int64_t o1) { k(xp, wp, yp, in, out, o0, o1); });
}

bool decode_linear_int8_applies(const at::Tensor& x, const at::Tensor& q_weight) {
  return q_weight.defined() && q_weight.dim() == 2 && rows_apply(x, q_weight.size(1));
}

at::Tensor decode_linear_int8(const at::Tensor& x, const at::Tensor& q_weight, const at::Tensor& scale,
                              const at::Tensor& bias, std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(q_weight.defined() && q_weight.scalar_type() == at::kChar && q_weight.dim() == 2 &&
                        q_weight.device().is_cpu(),
                    "decode_linear_int8: q_weight must be a CPU int8 [out, in] tensor, got ",
                    q_weight.defined() ? q_weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(scale.defined() && scale.scalar_type() == at::kFloat && scale.dim() == 1 &&
                        scale.size(0) == q_weight.size(0),
                    "decode_linear_int8: scale must be fp32 [", q_weight.size(0), "], got ",
                    scale.defined() ? scale.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(decode_linear_int8_applies(x, q_weight), "decode_linear_int8: needs at most ", kDecodeRows,
                    " CPU rows of ", q_weight.size(1), " (bf16 or fp32) without autograd; got x ", x.sizes(), " ",
                    x.scalar_type());
  const int64_t in = q_weight.size(1), out = q_weight.size(0), rows = std::max<int64_t>(x.numel() / in, 1);
  const at::Tensor q = q_weight.contiguous(), s = scale.contiguous();
  const int8_t* qp = q.data_ptr<int8_t>();
  const detail::DecodeKernelI8 k = detail::decode_kernel_i8(rows, in);
  return run(x, in, out, s.data_ptr<float>(), bias, out_dtype, as_is,
             [&](const float* xp, const float*, float* yp, int64_t o0, int64_t o1) { k(xp, qp, yp, in, out, o0, o1); });
}

std::pair<at::Tensor, at::Tensor> quantize_int8_rows(const at::Tensor& weight) {
  TORCH_CHECK_VALUE(weight.dim() == 2, "quantize_int8_rows: a weight [out, in] expected, got ", weight.sizes());
  at::NoGradGuard no_grad;
  const at::Tensor w = weight.detach().to(at::kCPU, at::kFloat);
  at::Tensor scale = w.abs().amax(1) / 127.0;
  scale = at::where(scale > 0, scale, at::ones_like(scale));  // an all-zero row stays zero
  at::Tensor q = at::round(w / scale.unsqueeze(1)).clamp(-127, 127).to(at::kChar);
  return {q.contiguous(), scale.contiguous()};
}

}  // namespace tessera::ops
