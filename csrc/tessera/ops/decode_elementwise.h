// RMSNorm and rotary embedding for a decoding step, each in one pass instead of ~8 tensor ops.
// At a few rows per step the ops' own cost (dispatch, allocation, one pass each) is most of a
// layer's non-GEMV time. Both round where transformers' op sequence rounds (bf16 after each
// product and the sum), so they differ from the op sequence only in the order of the RMS sum.
// nn::Norm and nn::apply_rotary call them when `decode_elementwise_applies`.
#pragma once
#include <ATen/core/Tensor.h>

#include <initializer_list>

namespace tessera::ops {

/// CPU, fp32 or bf16, last dimension contiguous, at most kDecodeRows `rows` (rows of a norm;
/// batch x positions of a rotary), and no autograd through x or the other operands.
bool decode_elementwise_applies(const at::Tensor& x, int64_t rows, std::initializer_list<at::Tensor> others = {});

/// weight * (x_f32 * rsqrt(mean(x_f32^2) + eps)).to(x.dtype) over the last dimension; weight of
/// x's dtype.
at::Tensor decode_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

/// x [B, H, L, D] * cos + rotate_half(x) * sin, tables [B, L, D] of x's dtype.
at::Tensor decode_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace tessera::ops
