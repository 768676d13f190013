// decode_linear's inner loops for int8 weights (per-row scales, applied by the caller after the
// sum): a quarter of fp32's bytes. Integers widen to fp32 in registers and multiply x exactly as
// the dequantized weight would, up to the one rounding of the scale at the end.
#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/decode_linear_simd.h"

namespace tessera::ops::detail {
namespace {

#if TESSERA_DECODE_SIMD

TESSERA_AVX512 inline __m512 load_i8x16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <int R, int P, int V>
TESSERA_AVX512 void avx512(const float* x, const int8_t* w, float* out, int64_t in, int64_t stride, int64_t o0,
                           int64_t o1) {
  const int64_t body = in / (16 * V) * (16 * V);
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m512 acc[R][P][V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = _mm512_setzero_ps();
    for (int64_t i = 0; i < body; i += 16 * V)
      for (int v = 0; v < V; ++v) {
        __m512 wv[P];
        for (int p = 0; p < P; ++p) wv[p] = load_i8x16(w + (o + p) * in + i + 16 * v);
        for (int r = 0; r < R; ++r) {
          const __m512 xv = _mm512_loadu_ps(x + r * in + i + 16 * v);
          for (int p = 0; p < P; ++p) acc[r][p][v] = _mm512_fmadd_ps(xv, wv[p], acc[r][p][v]);
        }
      }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m512 sum = acc[r][p][0];
        for (int v = 1; v < V; ++v) sum = _mm512_add_ps(sum, acc[r][p][v]);
        finish(_mm512_reduce_add_ps(sum), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) avx512<R, P / 2, V>(x, w, out, in, stride, o, o1);
}

TESSERA_AVX2 inline __m256 load_i8x8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

template <int R, int P, int V>
TESSERA_AVX2 void avx2(const float* x, const int8_t* w, float* out, int64_t in, int64_t stride, int64_t o0,
                       int64_t o1) {
  const int64_t body = in / (8 * V) * (8 * V);
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m256 acc[R][P][V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = _mm256_setzero_ps();
    for (int64_t i = 0; i < body; i += 8 * V)
      for (int v = 0; v < V; ++v) {
        __m256 wv[P];
        for (int p = 0; p < P; ++p) wv[p] = load_i8x8(w + (o + p) * in + i + 8 * v);
        for (int r = 0; r < R; ++r) {
          const __m256 xv = _mm256_loadu_ps(x + r * in + i + 8 * v);
          for (int p = 0; p < P; ++p) acc[r][p][v] = _mm256_fmadd_ps(xv, wv[p], acc[r][p][v]);
        }
      }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m256 sum = acc[r][p][0];
        for (int v = 1; v < V; ++v) sum = _mm256_add_ps(sum, acc[r][p][v]);
        finish(reduce_add(sum), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) avx2<R, P / 2, V>(x, w, out, in, stride, o, o1);
}

// As for bf16 (rows under 4 KiB one at a time, longer ones several at once).
constexpr DecodeKernelI8 kAvx512Short[kDecodeRows] = {avx512<1, 1, 4>, avx512<2, 1, 4>, avx512<3, 1, 4>,
                                                      avx512<4, 1, 4>, avx512<5, 1, 2>, avx512<6, 1, 2>,
                                                      avx512<7, 1, 2>, avx512<8, 1, 2>};
constexpr DecodeKernelI8 kAvx512Long[kDecodeRows] = {avx512<1, 8, 1>, avx512<2, 4, 1>, avx512<3, 4, 1>,
                                                     avx512<4, 4, 1>, avx512<5, 2, 1>, avx512<6, 2, 1>,
                                                     avx512<7, 2, 1>, avx512<8, 2, 1>};
constexpr DecodeKernelI8 kAvx2Short[kDecodeRows] = {avx2<1, 1, 4>, avx2<2, 1, 4>, avx2<3, 1, 2>, avx2<4, 1, 2>,
                                                    avx2<5, 1, 1>, avx2<6, 1, 1>, avx2<7, 1, 1>, avx2<8, 1, 1>};
constexpr DecodeKernelI8 kAvx2Long[kDecodeRows] = {avx2<1, 4, 1>, avx2<2, 4, 1>, avx2<3, 2, 1>, avx2<4, 2, 1>,
                                                   avx2<5, 1, 1>, avx2<6, 1, 1>, avx2<7, 1, 1>, avx2<8, 1, 1>};
#endif

constexpr DecodeKernelI8 kPortable[kDecodeRows] = {portable<1, int8_t>, portable<2, int8_t>, portable<3, int8_t>,
                                                   portable<4, int8_t>, portable<5, int8_t>, portable<6, int8_t>,
                                                   portable<7, int8_t>, portable<8, int8_t>};

}  // namespace

DecodeKernelI8 decode_kernel_i8(int64_t rows, int64_t in) {
  const int64_t r = rows - 1;
#if TESSERA_DECODE_SIMD
  const bool short_rows = in < 4096;
  if (decode_isa() == DecodeIsa::kAvx512) return short_rows ? kAvx512Short[r] : kAvx512Long[r];
  if (decode_isa() == DecodeIsa::kAvx2) return short_rows ? kAvx2Short[r] : kAvx2Long[r];
#endif
  return kPortable[r];
}

}  // namespace tessera::ops::detail
