#include "tessera/ops/decode_elementwise.h"
#include "tessera/ops/kernel_guard.h"

#include "tessera/ops/decode_linear.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::ops {
namespace {

template <typename T>
float f(T v) { return static_cast<float>(v); }

/// The value as x's dtype would hold it: bf16 rounds (to nearest even), fp32 stays.
template <typename T>
float as(float v) { return static_cast<float>(static_cast<T>(v)); }

/// A product rounded to fp32 before anything is added to it: the op sequence rounds there, a
/// fused multiply-add (which compilers may contract a * b + c into) would not.
inline float rounded(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(v));
#endif
  return v;
}

template <typename T>
void rms_rows(const T* x, const T* w, T* out, int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += dim, out += dim) {
    double sum = 0;  // fp64: the rounded mean is the exact one's, whatever the op sequence's order
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(f(x[i])) * f(x[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<T>(f(w[i]) * as<T>(f(x[i]) * inv));
  }
}

template <typename T>
void rotary_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3), half = D / 2;
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l) {
        const T* xr = xp + b * x.stride(0) + h * x.stride(1) + l * x.stride(2);
        T* o = op + b * out.stride(0) + h * out.stride(1) + l * out.stride(2);
        const T* c = cp + (b * L + l) * D;
        const T* s = sp + (b * L + l) * D;
        for (int64_t i = 0; i < D; ++i) {
          const float rotated = i < half ? -f(xr[i + half]) : f(xr[i - half]);
          const float a = as<T>(rounded(f(xr[i]) * f(c[i])));
          const float bb = as<T>(rounded(rotated * f(s[i])));
          o[i] = static_cast<T>(a + bb);
        }
      }
}

}  // namespace

bool decode_elementwise_applies(const at::Tensor& x, int64_t rows, std::initializer_list<at::Tensor> others) {
  if (!x.defined() || !x.device().is_cpu() || x.dim() < 1 || x.stride(-1) != 1 || rows > kDecodeRows) return false;
  if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16) return false;
  for (const at::Tensor& t : others)
    if (!t.defined() || t.scalar_type() != x.scalar_type() || !t.device().is_cpu()) return false;
  return own_kernel_may_take({x}) && own_kernel_may_take(others);
}

at::Tensor decode_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t dim = x.size(-1);
  TORCH_CHECK_VALUE(weight.scalar_type() == x.scalar_type() && weight.numel() == dim,
                    "decode_rms_norm: weight [", dim, "] of ", x.scalar_type(), " expected, got ", weight.sizes(), " ",
                    weight.scalar_type());
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t rows = dim ? xc.numel() / dim : 0;
  if (x.scalar_type() == at::kFloat)
    rms_rows(xc.data_ptr<float>(), wc.data_ptr<float>(), out.data_ptr<float>(), rows, dim, static_cast<float>(eps));
  else
    rms_rows(xc.data_ptr<at::BFloat16>(), wc.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(), rows, dim,
             static_cast<float>(eps));
  return out;
}

at::Tensor decode_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(-1) % 2 == 0 && x.stride(-1) == 1,
                    "decode_rotary: x [B, H, L, D] with D even and contiguous expected, got ", x.sizes());
  const std::vector<int64_t> table{x.size(0), x.size(2), x.size(3)};
  TORCH_CHECK_VALUE(cos.sizes() == table && sin.sizes() == table && cos.scalar_type() == x.scalar_type() &&
                        sin.scalar_type() == x.scalar_type(),
                    "decode_rotary: tables ", at::IntArrayRef(table), " of ", x.scalar_type(), " expected, got ",
                    cos.sizes(), " ", cos.scalar_type());
  at::Tensor out = at::empty_like(x);  // keeps x's (possibly transposed) layout, as x * cos would
  const at::Tensor c = cos.contiguous(), s = sin.contiguous();
  if (x.scalar_type() == at::kFloat)
    rotary_rows<float>(x, c, s, out);
  else
    rotary_rows<at::BFloat16>(x, c, s, out);
  return out;
}

}  // namespace tessera::ops
