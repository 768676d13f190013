// decode_linear's inner loops for weights that load straight into fp32 vectors: fp32 itself,
// and int8 (per-row scales, applied by the caller after the sum: a quarter of fp32's bytes).
// The structure of the bf16 loops (decode_linear_kernels.cpp) without their even/odd split.
// LibTorch hands one row of x against an fp32 weight to a GEMM that reads the weight at a quarter
// of the memory's rate on this class of machine (8 of 33 GB/s for llama-50m's step).
#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_kernels.h"
#include "tessera/ops/decode_linear_simd.h"

namespace tessera::ops::detail {
namespace {

#if TESSERA_DECODE_SIMD

TESSERA_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
TESSERA_AVX512 inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

template <int R, int P, int V, typename W>
TESSERA_AVX512 void direct_avx512(const float* x, const W* w, float* out, int64_t in, int64_t stride, int64_t o0,
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
        for (int p = 0; p < P; ++p) wv[p] = load16(w + (o + p) * in + i + 16 * v);
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
    if (o < o1) direct_avx512<R, P / 2, V>(x, w, out, in, stride, o, o1);
}

TESSERA_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
TESSERA_AVX2 inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

template <int R, int P, int V, typename W>
TESSERA_AVX2 void direct_avx2(const float* x, const W* w, float* out, int64_t in, int64_t stride, int64_t o0,
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
        for (int p = 0; p < P; ++p) wv[p] = load8(w + (o + p) * in + i + 8 * v);
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
    if (o < o1) direct_avx2<R, P / 2, V>(x, w, out, in, stride, o, o1);
}

/// As for bf16: short weight rows (under 4 KiB) one at a time with V independent chains, long
/// rows P at once; accumulators R * P * V within 16 zmm / 8 ymm up to R = 4.
template <typename W>
struct Tables {
  using K = void (*)(const float*, const W*, float*, int64_t, int64_t, int64_t, int64_t);
  static constexpr K avx512_short[kDecodeRows] = {direct_avx512<1, 1, 4, W>, direct_avx512<2, 1, 4, W>, direct_avx512<3, 1, 4, W>,
                                                  direct_avx512<4, 1, 4, W>, direct_avx512<5, 1, 2, W>, direct_avx512<6, 1, 2, W>,
                                                  direct_avx512<7, 1, 2, W>, direct_avx512<8, 1, 2, W>};
  static constexpr K avx512_long[kDecodeRows] = {direct_avx512<1, 8, 1, W>, direct_avx512<2, 4, 1, W>, direct_avx512<3, 4, 1, W>,
                                                 direct_avx512<4, 4, 1, W>, direct_avx512<5, 2, 1, W>, direct_avx512<6, 2, 1, W>,
                                                 direct_avx512<7, 2, 1, W>, direct_avx512<8, 2, 1, W>};
  static constexpr K avx2_short[kDecodeRows] = {direct_avx2<1, 1, 4, W>, direct_avx2<2, 1, 4, W>, direct_avx2<3, 1, 2, W>,
                                                direct_avx2<4, 1, 2, W>, direct_avx2<5, 1, 1, W>, direct_avx2<6, 1, 1, W>,
                                                direct_avx2<7, 1, 1, W>, direct_avx2<8, 1, 1, W>};
  static constexpr K avx2_long[kDecodeRows] = {direct_avx2<1, 4, 1, W>, direct_avx2<2, 4, 1, W>, direct_avx2<3, 2, 1, W>,
                                               direct_avx2<4, 2, 1, W>, direct_avx2<5, 1, 1, W>, direct_avx2<6, 1, 1, W>,
                                               direct_avx2<7, 1, 1, W>, direct_avx2<8, 1, 1, W>};
};
#endif

template <typename W>
auto pick_direct_kernel(int64_t rows, int64_t in) {
  using K = void (*)(const float*, const W*, float*, int64_t, int64_t, int64_t, int64_t);
  static constexpr K kPortable[kDecodeRows] = {portable<1, W>, portable<2, W>, portable<3, W>, portable<4, W>,
                                               portable<5, W>, portable<6, W>, portable<7, W>, portable<8, W>};
  const int64_t r = rows - 1;
#if TESSERA_DECODE_SIMD
  const bool short_rows = in * static_cast<int64_t>(sizeof(W)) < 4096;
  if (decode_isa() == DecodeIsa::kAvx512) return short_rows ? Tables<W>::avx512_short[r] : Tables<W>::avx512_long[r];
  if (decode_isa() == DecodeIsa::kAvx2) return short_rows ? Tables<W>::avx2_short[r] : Tables<W>::avx2_long[r];
#endif
  return kPortable[r];
}

}  // namespace

DecodeKernelF32 decode_kernel_f32(int64_t rows, int64_t in) { return pick_direct_kernel<float>(rows, in); }
DecodeKernelI8 decode_kernel_i8(int64_t rows, int64_t in) { return pick_direct_kernel<int8_t>(rows, in); }

}  // namespace tessera::ops::detail
