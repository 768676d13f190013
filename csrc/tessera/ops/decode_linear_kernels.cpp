// Bandwidth-bound GEMV over bf16 weights. Widening bf16 is a 16-bit shift into fp32, so a step
// loads V vectors of weights per weight row, widens them in registers and multiplies them into
// every row of x. P weight rows per step give P * V independent FMA chains (hiding the FMA
// latency at one row of x) and let each load of x feed P FMAs; P and V shrink as the rows of x
// grow so the R * P * V accumulators stay in registers (32 on AVX-512, 16 on AVX2).
// Intrinsics, not auto-vectorisation: GCC kept the old loop's accumulators in memory for R > 1.
#include "tessera/ops/decode_linear_kernels.h"

#include "tessera/ops/decode_linear.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#endif
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the "undefined" upper half inside its own widening intrinsics (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tessera::ops::detail {
namespace {

inline float widen(uint16_t b) { return __builtin_bit_cast(float, static_cast<uint32_t>(b) << 16); }

/// The columns past the vector body and the store, shared by every instruction set.
inline void finish(float sum, const float* x, const uint16_t* row, int64_t from, int64_t in, float* out) {
  for (int64_t i = from; i < in; ++i) sum += x[i] * widen(row[i]);
  *out = sum;
}

template <int R>
void portable(const float* x, const uint16_t* w, float* out, int64_t in, int64_t stride, int64_t o0, int64_t o1) {
  constexpr int64_t kLanes = 16;
  const int64_t body = in / kLanes * kLanes;
  for (int64_t o = o0; o < o1; ++o) {
    const uint16_t* row = w + o * in;
    float acc[R][kLanes] = {};
    for (int64_t i = 0; i < body; i += kLanes)
      for (int r = 0; r < R; ++r)
        for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += x[r * in + i + l] * widen(row[i + l]);
    for (int r = 0; r < R; ++r) {
      float sum = 0;
      for (int64_t l = 0; l < kLanes; ++l) sum += acc[r][l];
      finish(sum, x + r * in, row, body, in, out + r * stride + o);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define TESSERA_AVX512 __attribute__((target("avx512f")))
#define TESSERA_AVX2 __attribute__((target("avx2,fma")))

TESSERA_AVX512 inline __m512 load_bf16x16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <int R, int P, int V>
TESSERA_AVX512 void avx512(const float* x, const uint16_t* w, float* out, int64_t in, int64_t stride, int64_t o0,
                           int64_t o1) {
  constexpr int64_t kStep = 16 * V;
  const int64_t body = in / kStep * kStep;
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m512 acc[R][P][V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = _mm512_setzero_ps();
    for (int64_t i = 0; i < body; i += kStep) {
      __m512 wv[P][V];
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) wv[p][v] = load_bf16x16(w + (o + p) * in + i + 16 * v);
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) {
          const __m512 xv = _mm512_loadu_ps(x + r * in + i + 16 * v);
          for (int p = 0; p < P; ++p) acc[r][p][v] = _mm512_fmadd_ps(xv, wv[p][v], acc[r][p][v]);
        }
    }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m512 s = acc[r][p][0];
        for (int v = 1; v < V; ++v) s = _mm512_add_ps(s, acc[r][p][v]);
        finish(_mm512_reduce_add_ps(s), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) avx512<R, 1, V>(x, w, out, in, stride, o, o1);
}

TESSERA_AVX2 inline __m256 load_bf16x8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TESSERA_AVX2 inline float reduce_add(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

template <int R, int P, int V>
TESSERA_AVX2 void avx2(const float* x, const uint16_t* w, float* out, int64_t in, int64_t stride, int64_t o0,
                       int64_t o1) {
  constexpr int64_t kStep = 8 * V;
  const int64_t body = in / kStep * kStep;
  int64_t o = o0;
  for (; o + P <= o1; o += P) {
    __m256 acc[R][P][V];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) acc[r][p][v] = _mm256_setzero_ps();
    for (int64_t i = 0; i < body; i += kStep) {
      __m256 wv[P][V];
      for (int p = 0; p < P; ++p)
        for (int v = 0; v < V; ++v) wv[p][v] = load_bf16x8(w + (o + p) * in + i + 8 * v);
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) {
          const __m256 xv = _mm256_loadu_ps(x + r * in + i + 8 * v);
          for (int p = 0; p < P; ++p) acc[r][p][v] = _mm256_fmadd_ps(xv, wv[p][v], acc[r][p][v]);
        }
    }
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p) {
        __m256 s = acc[r][p][0];
        for (int v = 1; v < V; ++v) s = _mm256_add_ps(s, acc[r][p][v]);
        finish(reduce_add(s), x + r * in, w + (o + p) * in, body, in, out + r * stride + o + p);
      }
  }
  if constexpr (P > 1)
    if (o < o1) avx2<R, 1, V>(x, w, out, in, stride, o, o1);
}

// Accumulators R * P * V: at most 16 of the 32 zmm (AVX-512), 8 of the 16 ymm (AVX2).
constexpr DecodeKernel kAvx512[kDecodeRows] = {avx512<1, 2, 4>, avx512<2, 2, 4>, avx512<3, 2, 2>, avx512<4, 2, 2>,
                                               avx512<5, 1, 2>, avx512<6, 1, 2>, avx512<7, 1, 2>, avx512<8, 1, 2>};
constexpr DecodeKernel kAvx2[kDecodeRows] = {avx2<1, 2, 2>, avx2<2, 2, 2>, avx2<3, 1, 2>, avx2<4, 1, 2>,
                                             avx2<5, 1, 1>, avx2<6, 1, 1>, avx2<7, 1, 1>, avx2<8, 1, 1>};
#endif

constexpr DecodeKernel kPortable[kDecodeRows] = {portable<1>, portable<2>, portable<3>, portable<4>,
                                                 portable<5>, portable<6>, portable<7>, portable<8>};

enum class Isa { kAvx512, kAvx2, kPortable };

Isa best_supported() {
#if defined(__x86_64__) && defined(__GNUC__)
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

Isa isa() {
  static const Isa found = detect();
  return found;
}

}  // namespace

DecodeKernel decode_kernel(int64_t rows) {
  const int64_t r = rows - 1;
#if defined(__x86_64__) && defined(__GNUC__)
  if (isa() == Isa::kAvx512) return kAvx512[r];
  if (isa() == Isa::kAvx2) return kAvx2[r];
#endif
  return kPortable[r];
}

const char* decode_kernel_isa() {
  switch (isa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

}  // namespace tessera::ops::detail
