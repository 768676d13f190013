#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <c10/util/SmallVector.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tessera::ops {

bool decode_rows_apply(const at::Tensor& x, int64_t in) {
  if (!x.device().is_cpu() || (x.scalar_type() != at::kBFloat16 && x.scalar_type() != at::kFloat)) return false;
  if (!own_kernel_may_take({x}) || at::autocast::is_autocast_enabled(at::kCPU)) return false;
  return x.dim() >= 1 && in > 0 && x.size(-1) == in && x.numel() / in <= kDecodeRows;
}

namespace {

/// bf16 values as fp32, in a buffer of the calling thread's (valid until its next call).
const float* widened(const at::BFloat16* x, int64_t n) {
  thread_local std::vector<float> buffer;
  buffer.resize(n);
  for (int64_t i = 0; i < n; ++i) buffer[i] = static_cast<float>(x[i]);
  return buffer.data();
}

/// x widened to fp32 rows, decode_gemv into the result (rounded in the same pass for bf16). A
/// decoding step calls this ~7 times per layer: tensor ops around the kernel would cost more than
/// the small layers' GEMVs.
at::Tensor linear_run(const at::Tensor& x, const DecodeWeight& w, std::optional<at::ScalarType> out_dtype) {
  const int64_t in = w.in, rows = x.numel() / in;
  const at::ScalarType result = out_dtype.value_or(x.scalar_type());
  TORCH_CHECK_VALUE(at::isFloatingType(result), "decode_linear: out_dtype must be a floating type, got ", result);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = w.out;
  const at::Tensor xc = x.contiguous();
  thread_local std::vector<float> y_buffer;
  const float* xp =
      x.scalar_type() == at::kFloat ? xc.data_ptr<float>() : widened(xc.data_ptr<at::BFloat16>(), rows * in);
  const bool direct = result == at::kFloat;
  at::Tensor y = at::empty(shape, x.options().dtype(direct ? at::kFloat : result));
  float* yp = direct ? y.data_ptr<float>() : nullptr;
  if (!direct) {
    y_buffer.resize(rows * w.out);
    yp = y_buffer.data();
  }
  decode_gemv(w, xp, rows, yp, result == at::kBFloat16 ? y.data_ptr<at::BFloat16>() : nullptr);
  if (!direct && result != at::kBFloat16) y.copy_(at::from_blob(yp, shape, at::kFloat));  // fp16 or fp64 asked for
  return y;
}

}  // namespace

void decode_gemvs(c10::ArrayRef<GemvOut> outs, const float* x, int64_t rows) {
  if (rows <= 0 || outs.empty()) return;
  const int64_t in = outs[0].w->in;
  int64_t total = 0;
  bool bf16 = false, f32 = false, i8 = false;
  for (const GemvOut& o : outs) {
    TORCH_CHECK_VALUE(o.w->in == in, "decode_gemvs: weights read one x of ", in, " features, one has ", o.w->in);
    const at::ScalarType t = o.w->dtype;
    TORCH_CHECK_VALUE(t == at::kBFloat16 || t == at::kFloat || (t == at::kChar && o.w->scale),
                      "decode_gemv: a bf16, fp32 or int8 (with scales) weight expected, got ", t);
    total += o.w->out;
    bf16 |= t == at::kBFloat16;
    f32 |= t == at::kFloat;
    i8 |= t == at::kChar;
  }
  // Each kernel is picked, and bf16's reordered x made, once for all the weights.
  const detail::DecodeKernel kb = bf16 ? detail::decode_kernel(rows, in) : nullptr;
  const float* xs = bf16 ? detail::decode_split_x(x, rows, in) : nullptr;
  const detail::DecodeKernelF32 kf = f32 ? detail::decode_kernel_f32(rows, in) : nullptr;
  const detail::DecodeKernelI8 ki = i8 ? detail::decode_kernel_i8(rows, in) : nullptr;
  // The kernel over a slice of one weight's output features; then each output times its row's
  // scale (int8), plus the bias, rounded in the same pass.
  auto slice = [&](const GemvOut& g, int64_t o0, int64_t o1) {
    const DecodeWeight& w = *g.w;
    if (w.dtype == at::kBFloat16)
      kb(x, xs, static_cast<const uint16_t*>(w.data), g.y, in, w.out, o0, o1);
    else if (w.dtype == at::kFloat)
      kf(x, static_cast<const float*>(w.data), g.y, in, w.out, o0, o1);
    else
      ki(x, static_cast<const int8_t*>(w.data), g.y, in, w.out, o0, o1);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = o0; o < o1; ++o) {
        float& v = g.y[r * w.out + o];
        if (w.scale) v *= w.scale[o];
        if (w.bias) v += w.bias[o];
        if (g.y_bf16) g.y_bf16[r * w.out + o] = at::BFloat16(v);  // rounds to nearest even
      }
  };
  // One parallel region over all the weights' output features, end to end: one fork/join for a
  // layer's q/k/v (or gate/up), the threads' shares balanced over all of them. ~64 KiB of weights
  // per task at least, to amortise the scheduling.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / in);
  at::parallel_for(0, total, grain, [&](int64_t begin, int64_t end) {
    int64_t base = 0;
    for (const GemvOut& g : outs) {
      const int64_t o0 = std::max<int64_t>(begin - base, 0), o1 = std::min<int64_t>(end - base, g.w->out);
      if (o0 < o1) slice(g, o0, o1);
      base += g.w->out;
    }
  });
}

void decode_gemvs(c10::ArrayRef<GemvOut> outs, const at::BFloat16* x, int64_t rows) {
  if (rows <= 0 || outs.empty()) return;
  thread_local std::vector<float> y32;
  int64_t total = 0;
  for (const GemvOut& o : outs) total += o.w->out;
  y32.resize(rows * total);
  c10::SmallVector<GemvOut, 4> wide(outs.begin(), outs.end());
  float* y = y32.data();
  for (GemvOut& o : wide) {  // fp32 results in slices of one buffer, rounded into the caller's bf16
    TORCH_CHECK_VALUE(o.y_bf16, "decode_gemvs: bf16 rows of x give bf16 results (y_bf16)");
    o.y = y;
    y += rows * o.w->out;
  }
  decode_gemvs(wide, widened(x, rows * outs[0].w->in), rows);
}

void decode_gemv(const DecodeWeight& w, const float* x, int64_t rows, float* y, at::BFloat16* y_bf16) {
  decode_gemvs({GemvOut{&w, y, y_bf16}}, x, rows);
}

void decode_gemv(const DecodeWeight& w, const at::BFloat16* x, int64_t rows, at::BFloat16* y) {
  decode_gemvs({GemvOut{&w, nullptr, y}}, x, rows);
}

DecodeWeight decode_weight(const at::Tensor& weight, const at::Tensor& bias) {
  DecodeWeight w;
  w.weight_storage = weight.contiguous();
  w.dtype = weight.scalar_type();
  w.data = w.weight_storage.data_ptr();
  w.out = weight.size(0);
  w.in = weight.size(1);
  if (bias.defined()) {  // read as `out` floats: a shorter bias was read past its end
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == w.out && bias.is_floating_point() && bias.device().is_cpu(),
                      "decode_linear: bias must be a CPU floating [", w.out, "] like the weight's rows, got ",
                      bias.scalar_type(), " ", bias.sizes());
    w.bias_storage = bias.to(at::kFloat).contiguous();
    w.bias = w.bias_storage.data_ptr<float>();
  }
  return w;
}

DecodeWeight decode_weight_int8(const at::Tensor& q_weight, const at::Tensor& scale, const at::Tensor& bias) {
  DecodeWeight w = decode_weight(q_weight, bias);
  w.scale_storage = scale.contiguous();
  w.scale = w.scale_storage.data_ptr<float>();
  return w;
}

bool decode_weight_applies(const at::Tensor& weight, at::ScalarType x_dtype) {
  if (!weight.defined() || !weight.device().is_cpu() || weight.dim() != 2) return false;
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  if (!bf16 && !(weight.scalar_type() == at::kFloat && x_dtype == at::kFloat)) return false;
  return own_kernel_may_take({weight});
}

bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight) {
  return decode_weight_applies(weight, x.scalar_type()) && decode_rows_apply(x, weight.size(1));
}

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(decode_linear_applies(x, weight), "decode_linear: needs a CPU weight [out, in] (bf16, or fp32 ",
                    "with an fp32 x) and at most ", kDecodeRows, " rows of x without autograd; got x ", x.sizes(), " ",
                    x.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type());
  return linear_run(x, decode_weight(weight, bias), out_dtype);
}

at::Tensor decode_linear(const at::Tensor& x, const DecodeWeight& w, std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) == w.in && x.numel() / w.in <= kDecodeRows, "decode_linear: x ",
                    x.sizes(), " does not fit a weight of ", w.in, " inputs (at most ", kDecodeRows, " rows)");
  return linear_run(x, w, out_dtype);
}

bool decode_linear_int8_applies(const at::Tensor& x, const at::Tensor& q_weight) {
  return q_weight.defined() && q_weight.dim() == 2 && decode_rows_apply(x, q_weight.size(1));
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
  return linear_run(x, decode_weight_int8(q_weight, scale, bias), out_dtype);
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
