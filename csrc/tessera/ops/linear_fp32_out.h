// Half-precision rows against a half-precision weight, the product written in fp32, on CUDA: one
// cuBLAS GEMM that accumulates in fp32 and skips the rounding to bf16/fp16 (at::mm's out_dtype).
// Decoding asks for it so that greedy picks and beam scores are not decided by that rounding, as
// the CPU decoding kernels (decode_linear.h) already guarantee; a bf16 head's logits on CUDA were
// bf16, and CUDA and the CPU could break a tie differently.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace tessera::ops {

/// x [..., in] and weight [out, in], both bf16 or both fp16 on one CUDA device, bias [out] of that
/// dtype or undefined: x W^T + b as fp32 [..., out]. nullopt where it does not apply (another
/// device or dtype, autocast, or what own_kernel_may_take refuses: autograd, tensor subclasses).
std::optional<at::Tensor> cuda_linear_fp32_out(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace tessera::ops
