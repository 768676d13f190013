// The inner loops of decode_linear (decode_linear.h), one set per instruction set, chosen once
// from what the CPU reports: AVX-512, AVX2 + FMA, or portable C++.
#pragma once
#include <cstdint>

namespace tessera::ops::detail {

/// out[r * out_stride + o] = sum_i x[r * in + i] * bf16(w[o * in + i]) for r < rows and o in
/// [o0, o1); x fp32 row-major, w the bf16 bits of a row-major [out, in] weight, xs x as
/// `decode_split_x` reorders it (nullptr where that returns nullptr).
using DecodeKernel = void (*)(const float* x, const float* xs, const uint16_t* w, float* out, int64_t in,
                              int64_t out_stride, int64_t o0, int64_t o1);

/// x's rows reordered for the bf16 kernels of this CPU (each block of columns: its even entries,
/// then its odd ones), or nullptr when they read x as it is. Once per call, before the threads
/// split the outputs; the buffer belongs to the calling thread until its next call.
const float* decode_split_x(const float* x, int64_t rows, int64_t in);

/// The same for fp32 weights.
using DecodeKernelF32 = void (*)(const float* x, const float* w, float* out, int64_t in, int64_t out_stride,
                                 int64_t o0, int64_t o1);

/// The same for int8 weights: the sum of x times the integers, each row's scale applied after.
using DecodeKernelI8 = void (*)(const float* x, const int8_t* w, float* out, int64_t in, int64_t out_stride,
                                int64_t o0, int64_t o1);

/// The kernel for `rows` rows of x (1 to kDecodeRows) against weight rows of `in` entries.
DecodeKernel decode_kernel(int64_t rows, int64_t in);
DecodeKernelF32 decode_kernel_f32(int64_t rows, int64_t in);
DecodeKernelI8 decode_kernel_i8(int64_t rows, int64_t in);

enum class DecodeIsa { kAvx512, kAvx2, kPortable };

/// What the kernels run on: the best the CPU has, or a lower one named by TESSERA_DECODE_ISA.
DecodeIsa decode_isa();

/// "avx512", "avx2" or "portable": what decode_kernel hands out on this CPU.
const char* decode_kernel_isa();

}  // namespace tessera::ops::detail
