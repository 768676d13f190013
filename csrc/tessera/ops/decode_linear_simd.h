// What decode_linear's bf16, fp32 and int8 kernels share: reading a weight as fp32, the columns past
// the vector body, the portable loop, and the instruction-set attributes.
#pragma once
#include "tessera/ops/decode_linear.h"

#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the "undefined" vectors inside its own AVX-512 intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace tessera::ops::detail {

/// A weight as fp32: bf16 is the top half of an fp32.
inline float weight_value(uint16_t b) { return __builtin_bit_cast(float, static_cast<uint32_t>(b) << 16); }
inline float weight_value(float w) { return w; }
inline float weight_value(int8_t q) { return static_cast<float>(q); }  // its row's scale comes after the sum

/// The columns past the vector body and the store.
template <typename W>
inline void finish(float sum, const float* x, const W* row, int64_t from, int64_t in, float* out) {
  for (int64_t i = from; i < in; ++i) sum += x[i] * weight_value(row[i]);
  *out = sum;
}

/// Any CPU: 16 partial sums per row of x, which compilers vectorise without reassociation flags.
template <int R, typename W>
void portable(const float* x, const W* w, float* out, int64_t in, int64_t stride, int64_t o0, int64_t o1) {
  constexpr int64_t kLanes = 16;
  const int64_t body = in / kLanes * kLanes;
  for (int64_t o = o0; o < o1; ++o) {
    const W* row = w + o * in;
    float acc[R][kLanes] = {};
    for (int64_t i = 0; i < body; i += kLanes)
      for (int r = 0; r < R; ++r)
        for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += x[r * in + i + l] * weight_value(row[i + l]);
    for (int r = 0; r < R; ++r) {
      float sum = 0;
      for (int64_t l = 0; l < kLanes; ++l) sum += acc[r][l];
      finish(sum, x + r * in, row, body, in, out + r * stride + o);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define TESSERA_DECODE_SIMD 1
#define TESSERA_AVX512 __attribute__((target("avx512f")))
#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

TESSERA_AVX2 inline float reduce_add(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

}  // namespace tessera::ops::detail
