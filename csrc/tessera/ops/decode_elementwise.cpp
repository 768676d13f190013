#include "tessera/ops/decode_elementwise.h"
#include "tessera/ops/kernel_guard.h"

#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_rows.h"

#include <ATen/ATen.h>

namespace tessera::ops {
namespace {

template <typename T>
void rotary_rows(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out) {
  const int64_t B = x.size(0), H = x.size(1), L = x.size(2), D = x.size(3);
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const T* cp = cos.data_ptr<T>();
  const T* sp = sin.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l)
        detail::rotary_row(xp + b * x.stride(0) + h * x.stride(1) + l * x.stride(2), cp + (b * L + l) * D,
                           sp + (b * L + l) * D, op + b * out.stride(0) + h * out.stride(1) + l * out.stride(2), D);
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
    detail::rms_rows(xc.data_ptr<float>(), wc.data_ptr<float>(), out.data_ptr<float>(), rows, dim, static_cast<float>(eps));
  else
    detail::rms_rows(xc.data_ptr<at::BFloat16>(), wc.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(), rows, dim,
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
