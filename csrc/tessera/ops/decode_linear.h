// y = x W^T + b for decoding: a few rows of activations against a weight, bound by how fast the
// weight streams from memory. LibTorch runs such a product far below the memory's rate on CPUs
// (one row of x: 8 GB/s bf16, 8 GB/s fp32 through its GEMM, of ~33 GB/s), so these kernels
// (decode_linear_kernels.cpp, decode_linear_direct.cpp) read each weight row once for all rows of
// x, widen bf16 to fp32 in registers, and accumulate in fp32.
//
// nn::Linear and the LM head call it when it applies (`decode_linear_applies`): CPU, a bf16
// weight (x bf16 or fp32) or an fp32 one (x fp32), no autograd, no autocast, at most
// kDecodeRows rows. Everything else stays on at::linear.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <utility>

namespace tessera::ops {

constexpr int64_t kDecodeRows = 8;

/// Whether decode_linear serves (x, weight): see the file comment.
bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight);

/// x [..., in] (bf16 or fp32), weight [out, in] (bf16 or fp32), bias [out] or undefined. The result has
/// x's dtype, or `out_dtype` (e.g. fp32 logits from a bf16 model).
at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype = std::nullopt);

/// Int8 weight-only decoding: x against q_weight int8 [out, in] with per-row scales fp32 [out]
/// (the weight being q * scale), decode_linear's rules for x.
bool decode_linear_int8_applies(const at::Tensor& x, const at::Tensor& q_weight);
at::Tensor decode_linear_int8(const at::Tensor& x, const at::Tensor& q_weight, const at::Tensor& scale,
                              const at::Tensor& bias, std::optional<at::ScalarType> out_dtype = std::nullopt);

/// Symmetric per-row int8: scale = max |w| / 127 (1 for an all-zero row), q = round(w / scale).
std::pair<at::Tensor, at::Tensor> quantize_int8_rows(const at::Tensor& weight);

}  // namespace tessera::ops
