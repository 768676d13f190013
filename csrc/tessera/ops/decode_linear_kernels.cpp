// Bandwidth-bound GEMV over bf16 weights. A bf16 is the top half of an fp32, so a vector of
// raw weights gives two fp32 vectors by a shift (the even-indexed weights) and a mask (the odd
// ones), with no widening instruction; x is split the same way once per call, before the threads
// share out the weight rows (`decode_split_x`: each block of columns, its even entries, then its
// odd ones). How many weight rows are read at once depends
// on their length (the tables at the end). Intrinsics, not auto-vectorisation: GCC kept a
// portable loop's accumulators in memory for more than one row of x.
#include "tessera/ops/decode_linear_kernels.h"

#include "tessera/ops/decode_linear.h"
#include "tessera/ops/decode_linear_simd.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace tessera::ops::detail {
namespace {

#if TESSERA_DECODE_SIMD

/// x's rows with each block of 2 * lanes columns reordered as its even entries, then its odd
/// ones: the order in which the shift and the mask hand out a block's weights.
const float* split_even_odd(const float* x, int64_t rows, int64_t in, int64_t lanes) {
  thread_local std::vector<float> buffer;
  const int64_t block = 2 * lanes, body = in / block * block;
  buffer.resize(rows * body);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < body; b += block)
      for (int64_t l = 0; l < lanes; ++l) {
        buffer[r * body + b + l] = x[r * in + b + 2 * l];
        buffer[r * body + b + lanes + l] = x[r * in + b + 2 * l + 1];
      }
  return buffer.data();
}

template <int R, int P, int V>
TESSERA_AVX512 void bf16_avx512(const float* x, const float* xs, const uint16_t* w, float* out, int64_t in,
                           int64_t stride, int64_t o0, int64_t o1) {
  const int64_t split = in / 32 * 32, body = in / (32 * V) * (32 * V);
  const __m512i odd = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m512 acc[R][P][2 * V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int a = 0; a < 2 * V; ++a) acc[r][p][a] = _mm512_setzero_ps();
    for (int64_t i = 0; i < body; i += 32 * V)
      for (int v = 0; v < V; ++v) {
        __m512 even_w[P], odd_w[P];
        for (int p = 0; p < P; ++p) {
          const __m512i raw = _mm512_loadu_si512(w + (o + p) * in + i + 32 * v);
          even_w[p] = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
          odd_w[p] = _mm512_castsi512_ps(_mm512_and_si512(raw, odd));
        }
        for (int r = 0; r < R; ++r) {
          const float* xr = xs + r * split + i + 32 * v;
          const __m512 xe = _mm512_loadu_ps(xr), xo = _mm512_loadu_ps(xr + 16);
          for (int p = 0; p < P; ++p) {
            acc[r][p][2 * v] = _mm512_fmadd_ps(xe, even_w[p], acc[r][p][2 * v]);
            acc[r][p][2 * v + 1] = _mm512_fmadd_ps(xo, odd_w[p], acc[r][p][2 * v + 1]);
          }
        }
      }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m512 sum = acc[r][p][0];
        for (int a = 1; a < 2 * V; ++a) sum = _mm512_add_ps(sum, acc[r][p][a]);
        finish(_mm512_reduce_add_ps(sum), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) bf16_avx512<R, P / 2, V>(x, xs, w, out, in, stride, o, o1);
}

template <int R, int P, int V>
TESSERA_AVX2 void bf16_avx2(const float* x, const float* xs, const uint16_t* w, float* out, int64_t in,
                       int64_t stride, int64_t o0, int64_t o1) {
  const int64_t split = in / 16 * 16, body = in / (16 * V) * (16 * V);
  const __m256i odd = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m256 acc[R][P][2 * V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int a = 0; a < 2 * V; ++a) acc[r][p][a] = _mm256_setzero_ps();
    for (int64_t i = 0; i < body; i += 16 * V)
      for (int v = 0; v < V; ++v) {
        __m256 even_w[P], odd_w[P];
        for (int p = 0; p < P; ++p) {
          const auto* at = reinterpret_cast<const __m256i*>(w + (o + p) * in + i + 16 * v);
          const __m256i raw = _mm256_loadu_si256(at);
          even_w[p] = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
          odd_w[p] = _mm256_castsi256_ps(_mm256_and_si256(raw, odd));
        }
        for (int r = 0; r < R; ++r) {
          const float* xr = xs + r * split + i + 16 * v;
          const __m256 xe = _mm256_loadu_ps(xr), xo = _mm256_loadu_ps(xr + 8);
          for (int p = 0; p < P; ++p) {
            acc[r][p][2 * v] = _mm256_fmadd_ps(xe, even_w[p], acc[r][p][2 * v]);
            acc[r][p][2 * v + 1] = _mm256_fmadd_ps(xo, odd_w[p], acc[r][p][2 * v + 1]);
          }
        }
      }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m256 sum = acc[r][p][0];
        for (int a = 1; a < 2 * V; ++a) sum = _mm256_add_ps(sum, acc[r][p][a]);
        finish(reduce_add(sum), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) bf16_avx2<R, P / 2, V>(x, xs, w, out, in, stride, o, o1);
}

// By rows of x, for short weight rows (under 4 KiB; 8 KiB for one row of x, see decode_kernel:
// one row at a time, V blocks per step for independent FMA chains, a plain sequential stream)
// and long ones (P rows at once: several streams in flight). Cold 32 MiB weights, 2 cores:
// 512-wide rows 24 GB/s one at a time, 16 with eight at once; 4096-wide rows 23 GB/s one at a
// time, 29 with eight (a read-only sum: 27).
// Accumulators R * P * 2V stay within 16 of 32 zmm / 8 of 16 ymm up to R = 4.
constexpr DecodeKernel kAvx512Short[kDecodeRows] = {bf16_avx512<1, 1, 2>, bf16_avx512<2, 1, 2>, bf16_avx512<3, 1, 2>,
                                                    bf16_avx512<4, 1, 2>, bf16_avx512<5, 1, 1>, bf16_avx512<6, 1, 1>,
                                                    bf16_avx512<7, 1, 1>, bf16_avx512<8, 1, 1>};
constexpr DecodeKernel kAvx512Long[kDecodeRows] = {bf16_avx512<1, 8, 1>, bf16_avx512<2, 4, 1>, bf16_avx512<3, 2, 1>,
                                                   bf16_avx512<4, 2, 1>, bf16_avx512<5, 1, 1>, bf16_avx512<6, 1, 1>,
                                                   bf16_avx512<7, 1, 1>, bf16_avx512<8, 1, 1>};
constexpr DecodeKernel kAvx2Short[kDecodeRows] = {bf16_avx2<1, 1, 2>, bf16_avx2<2, 1, 2>, bf16_avx2<3, 1, 1>, bf16_avx2<4, 1, 1>,
                                                  bf16_avx2<5, 1, 1>, bf16_avx2<6, 1, 1>, bf16_avx2<7, 1, 1>, bf16_avx2<8, 1, 1>};
constexpr DecodeKernel kAvx2Long[kDecodeRows] = {bf16_avx2<1, 4, 1>, bf16_avx2<2, 2, 1>, bf16_avx2<3, 1, 1>, bf16_avx2<4, 1, 1>,
                                                 bf16_avx2<5, 1, 1>, bf16_avx2<6, 1, 1>, bf16_avx2<7, 1, 1>, bf16_avx2<8, 1, 1>};
#endif

/// The portable loop reads x as it is (decode_split_x hands it nullptr).
template <int R>
void portable_bf16(const float* x, const float*, const uint16_t* w, float* out, int64_t in, int64_t stride, int64_t o0,
                   int64_t o1) {
  portable<R, uint16_t>(x, w, out, in, stride, o0, o1);
}

constexpr DecodeKernel kPortable[kDecodeRows] = {portable_bf16<1>, portable_bf16<2>, portable_bf16<3>,
                                                 portable_bf16<4>, portable_bf16<5>, portable_bf16<6>,
                                                 portable_bf16<7>, portable_bf16<8>};

using Isa = DecodeIsa;

Isa best_supported() {
#if TESSERA_DECODE_SIMD
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

/// The best the CPU has, or a lower one named by TESSERA_DECODE_ISA (how the tests reach every
/// path on one machine).
Isa detect() {
  const Isa best = best_supported();
  const char* env = std::getenv("TESSERA_DECODE_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string name(env);
  const Isa asked = name == "avx512" ? Isa::kAvx512 : name == "avx2" ? Isa::kAvx2 : Isa::kPortable;
  TORCH_CHECK_VALUE(name == "avx512" || name == "avx2" || name == "portable",
                    "TESSERA_DECODE_ISA: expected avx512, avx2 or portable, got '", name, "'");
  TORCH_CHECK_VALUE(asked >= best, "TESSERA_DECODE_ISA=", name, ": this CPU does not support it");
  return asked;
}

}  // namespace

DecodeIsa decode_isa() {
  static const Isa found = detect();
  return found;
}

DecodeKernel decode_kernel(int64_t rows, int64_t in) {
  const int64_t r = rows - 1;
#if TESSERA_DECODE_SIMD
  // One row of x is bound by the memory, and one weight row at a time (a single sequential
  // stream) reads fastest up to 8 KiB rows: 2816-wide (llama-350m's down_proj) 26-29 GB/s against
  // 19-22 with eight at once. Several rows of x are bound by the FMAs instead, and reading P
  // weight rows against each load of x wins from 4 KiB rows (2 rows of x: 17-20 against 14 GB/s).
  const bool short_rows = in * 2 < (rows == 1 ? 8192 : 4096);
  if (decode_isa() == Isa::kAvx512) return short_rows ? kAvx512Short[r] : kAvx512Long[r];
  if (decode_isa() == Isa::kAvx2) return short_rows ? kAvx2Short[r] : kAvx2Long[r];
#endif
  return kPortable[r];
}

const float* decode_split_x(const float* x, int64_t rows, int64_t in) {
#if TESSERA_DECODE_SIMD
  if (decode_isa() == Isa::kAvx512) return split_even_odd(x, rows, in, 16);
  if (decode_isa() == Isa::kAvx2) return split_even_odd(x, rows, in, 8);
#endif
  return nullptr;
}

const char* decode_kernel_isa() {
  switch (decode_isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace tessera::ops::detail
