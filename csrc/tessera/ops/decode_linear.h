// y = x W^T + b for decoding: a few rows of activations against bf16 weights, bound by how fast
// the weights stream from memory. LibTorch's bf16 linear runs such a product at half the byte
// rate of its fp32 one on CPUs (measured: 8 vs 18 GB/s on AVX-512 with avx512_bf16), so bf16
// weights decoded slower than fp32; this kernel widens bf16 to fp32 in registers, accumulates
// in fp32, and reads each weight row once for all rows of x.
//
// nn::Linear and the LM head call it when it applies (`decode_linear_applies`): CPU, bf16
// weight, no autograd, at most kDecodeRows rows. Everything else stays on at::linear.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace tessera::ops {

constexpr int64_t kDecodeRows = 8;

/// Whether decode_linear serves (x, weight): see the file comment.
bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight);

/// x [..., in] (bf16 or fp32), weight [out, in] bf16, bias [out] or undefined. The result has
/// x's dtype, or `out_dtype` (e.g. fp32 logits from a bf16 model).
at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype = std::nullopt);

}  // namespace tessera::ops
