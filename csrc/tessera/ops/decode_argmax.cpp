#include "tessera/ops/decode_argmax.h"

#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/decode_linear_simd.h"
#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>

#include <limits>

namespace tessera::ops {
namespace {

/// Any CPU: one pass, NaN winning (nothing compares above it).
int64_t first_argmax_portable(const float* p, int64_t n) {
  int64_t index = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (p[index] != p[index]) break;
    if (p[i] > p[index] || p[i] != p[i]) index = i;
  }
  return index;
}

#if TESSERA_DECODE_SIMD
/// Two vector passes: the largest value (NaN noted apart, as vmaxps drops it), then the first
/// block holding it.
TESSERA_AVX512 int64_t first_argmax_avx512(const float* p, int64_t n) {
  const int64_t body = n / 16 * 16;
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __mmask16 nan = 0;
  for (int64_t i = 0; i < body; i += 16) {
    const __m512 v = _mm512_loadu_ps(p + i);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    top = _mm512_max_ps(top, v);
  }
  float best = _mm512_reduce_max_ps(top);
  for (int64_t i = body; i < n; ++i) {
    nan |= p[i] != p[i];
    best = p[i] > best ? p[i] : best;
  }
  if (nan) return first_argmax_portable(p, n);  // the first NaN
  const __m512 target = _mm512_set1_ps(best);
  for (int64_t i = 0; i < body; i += 16)
    if (const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(p + i), target, _CMP_EQ_OQ))
      return i + __builtin_ctz(hit);
  for (int64_t i = body; i < n; ++i)
    if (p[i] == best) return i;
  return 0;  // every entry -inf: index 0, as torch.argmax
}
#endif

}  // namespace

bool decode_argmax_applies(const at::Tensor& scores) {
  return scores.defined() && scores.device().is_cpu() && scores.scalar_type() == at::kFloat && scores.dim() == 2 &&
         scores.size(1) >= 1 && scores.size(0) <= kDecodeRows && own_kernel_may_take({scores});
}

at::Tensor decode_argmax(const at::Tensor& scores) {
  TORCH_CHECK_VALUE(decode_argmax_applies(scores), "decode_argmax: CPU fp32 scores [rows <= ", kDecodeRows,
                    ", n >= 1] without autograd expected, got ", scores.sizes(), " ", scores.scalar_type());
  auto pick = first_argmax_portable;
#if TESSERA_DECODE_SIMD
  if (detail::decode_isa() == detail::DecodeIsa::kAvx512) pick = first_argmax_avx512;
#endif
  const at::Tensor s = scores.contiguous();
  const int64_t rows = s.size(0), n = s.size(1);
  at::Tensor out = at::empty({rows}, s.options().dtype(at::kLong));
  const float* p = s.data_ptr<float>();
  int64_t* o = out.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) o[r] = pick(p + r * n, n);
  return out;
}

}  // namespace tessera::ops
