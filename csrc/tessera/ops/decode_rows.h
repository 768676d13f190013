// The per-row arithmetic of the decoding step's elementwise ops (RMSNorm, rotary), shared by their
// tensor forms (decode_elementwise.cpp) and the fused layer (nn/decode_layer.cpp), so that both
// round at the same points as transformers' op sequence.
#pragma once
#include <cmath>
#include <cstdint>

namespace tessera::ops::detail {

template <typename T>
inline float widen(T v) { return static_cast<float>(v); }

/// The value as T would hold it: bf16 rounds (to nearest even), fp32 stays.
template <typename T>
inline float as(float v) { return static_cast<float>(static_cast<T>(v)); }

/// A product rounded to fp32 before anything is added to it: the op sequence rounds there, a
/// fused multiply-add (which compilers may contract a * b + c into) would not.
inline float rounded(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(v));
#endif
  return v;
}

/// weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(T), row by row.
template <typename T>
void rms_rows(const T* x, const T* w, T* out, int64_t rows, int64_t dim, float eps) {
  for (int64_t r = 0; r < rows; ++r, x += dim, out += dim) {
    double sum = 0;  // fp64: the rounded mean is the exact one's, whatever the op sequence's order
    for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(widen(x[i])) * widen(x[i]);
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    const float inv = 1.0f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<T>(widen(w[i]) * as<T>(widen(x[i]) * inv));
  }
}

/// x * cos + rotate_half(x) * sin for one head's vector of D entries (D even).
template <typename T>
void rotary_row(const T* x, const T* c, const T* s, T* out, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < D; ++i) {
    const float rotated = i < half ? -widen(x[i + half]) : widen(x[i - half]);
    const float a = as<T>(rounded(widen(x[i]) * widen(c[i])));
    const float b = as<T>(rounded(rotated * widen(s[i])));
    out[i] = static_cast<T>(a + b);
  }
}

}  // namespace tessera::ops::detail
