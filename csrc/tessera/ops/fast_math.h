// exp and log for float that GCC can vectorise across lanes (no calls, no branches): the
// soft-DTW recursion spends its time in them, and libm's scalar expf/logf would keep every lane
// loop scalar. Accuracy: a few ulp over the ranges soft-DTW uses (tested in test_ops.cpp).
#pragma once
#include <cmath>
#include <cstdint>

namespace tessera::ops::detail {

/// e^x; exactly 0 below -87.3 (where float would go denormal), +inf-free above 88.7 (clamped).
inline float fast_exp(float x) {
  const float lo = -87.3365447f, hi = 88.7228391f;
  const float c = x < lo ? lo : (x > hi ? hi : x);
  // n = round(c / ln 2) through the 1.5 * 2^23 trick: the integer lands in the low mantissa bits.
  const float magic = 12582912.0f;
  const float shifted = c * 1.44269504088896341f + magic;
  const float n = shifted - magic;
  const int32_t ni = __builtin_bit_cast(int32_t, shifted) - __builtin_bit_cast(int32_t, magic);
  const float r = c - n * 0.693359375f + n * 2.12194440e-4f;  // Cody-Waite: ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = __builtin_bit_cast(float, (ni + 127) << 23);
  return x < lo ? 0.0f : p * scale;
}

/// log x for finite x > 0 (normal floats): x = 2^e * f with f in [sqrt(1/2), sqrt(2)),
/// log f = 2 atanh(z), z = (f - 1) / (f + 1), |z| <= 0.172, by its odd series to z^9.
inline float fast_log(float x) {
  const int32_t bits = __builtin_bit_cast(int32_t, x);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  float f = __builtin_bit_cast(float, (bits & 0x7fffff) | 0x3f800000);
  const bool big = f > 1.41421356f;
  f = big ? f * 0.5f : f;
  e = big ? e + 1 : e;
  const float z = (f - 1.0f) / (f + 1.0f);
  const float z2 = z * z;
  float s = 1.0f / 9.0f;
  s = s * z2 + 1.0f / 7.0f;
  s = s * z2 + 1.0f / 5.0f;
  s = s * z2 + 1.0f / 3.0f;
  s = s * z2 + 1.0f;
  const float ef = static_cast<float>(e);
  return ef * 0.693359375f + (ef * -2.12194440e-4f + 2.0f * z * s);
}

// Double lanes (gradcheck, references) take libm: exactness matters there, not speed.
inline double fast_exp(double x) { return std::exp(x); }
inline double fast_log(double x) { return std::log(x); }

}  // namespace tessera::ops::detail
