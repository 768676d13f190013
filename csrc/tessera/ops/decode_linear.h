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
#include <c10/util/ArrayRef.h>

#include <optional>
#include <utility>

namespace tessera::ops {

constexpr int64_t kDecodeRows = 8;

/// Whether x is rows a decoding kernel serves against a weight of `in` inputs: CPU, fp32 or bf16,
/// at most kDecodeRows, nothing that own_kernel_may_take refuses, no autocast (whose dtypes
/// at::linear follows).
bool decode_rows_apply(const at::Tensor& x, int64_t in);

/// The weight side of that rule: a CPU [out, in] weight, bf16 (x bf16 or fp32) or fp32 (x fp32).
bool decode_weight_applies(const at::Tensor& weight, at::ScalarType x_dtype);

/// Whether decode_linear serves (x, weight): see the file comment.
bool decode_linear_applies(const at::Tensor& x, const at::Tensor& weight);

/// x [..., in] (bf16 or fp32), weight [out, in] (bf16 or fp32), bias [out] or undefined. The result has
/// x's dtype, or `out_dtype` (e.g. fp32 logits from a bf16 model).
at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                         std::optional<at::ScalarType> out_dtype = std::nullopt);

/// Int8 weight-only decoding: x against q_weight int8 [out, in] with per-row scales fp32 [out]
/// (the weight being q * scale), decode_linear's rules for x (decode_rows_apply).
bool decode_linear_int8_applies(const at::Tensor& x, const at::Tensor& q_weight);
at::Tensor decode_linear_int8(const at::Tensor& x, const at::Tensor& q_weight, const at::Tensor& scale,
                              const at::Tensor& bias, std::optional<at::ScalarType> out_dtype = std::nullopt);

/// A weight as the decoding kernels read it: raw row-major [out, in] data (bf16 bits, fp32 or
/// int8 with per-row `scale`) and an fp32 bias, which the *_storage tensors hold alive. For callers that keep
/// their own buffers (a fused decoding layer): no tensor is made per product.
struct DecodeWeight {
  const void* data = nullptr;
  at::ScalarType dtype = at::kFloat;  ///< kBFloat16, kFloat or kChar
  const float* scale = nullptr;       ///< int8 only: [out]
  const float* bias = nullptr;        ///< [out] or nullptr
  int64_t out = 0, in = 0;
  at::Tensor weight_storage, scale_storage, bias_storage;
};

/// `weight` (bf16 or fp32, [out, in]) and `bias` as a DecodeWeight.
DecodeWeight decode_weight(const at::Tensor& weight, const at::Tensor& bias);
/// An int8 weight with its per-row scales (quantize_int8_rows) and `bias` as a DecodeWeight.
DecodeWeight decode_weight_int8(const at::Tensor& q_weight, const at::Tensor& scale, const at::Tensor& bias);

/// decode_linear against a DecodeWeight (the caller has checked the rules above for x).
at::Tensor decode_linear(const at::Tensor& x, const DecodeWeight& w,
                         std::optional<at::ScalarType> out_dtype = std::nullopt);

/// y[r, o] = (x[r] . W[o]) * scale[o] + bias[o] in fp32 for r < rows, over the intra-op threads;
/// x fp32 [rows, in]. Where `y_bf16` is given, each output is also rounded into it (same pass).
void decode_gemv(const DecodeWeight& w, const float* x, int64_t rows, float* y, at::BFloat16* y_bf16 = nullptr);
/// The same from bf16 rows of x to bf16 results, widened and accumulated in fp32 on the way.
void decode_gemv(const DecodeWeight& w, const at::BFloat16* x, int64_t rows, at::BFloat16* y);

/// One weight's results in decode_gemvs: fp32 into y [rows, w->out], also rounded into y_bf16
/// where given. From bf16 rows of x, y is the function's own buffer and y_bf16 the results.
struct GemvOut {
  const DecodeWeight* w = nullptr;
  float* y = nullptr;
  at::BFloat16* y_bf16 = nullptr;
};
/// decode_gemv for several weights reading the same x (one `in`), in one parallel region: a layer's
/// q/k/v or gate/up projections pay one fork/join, and the threads share all their outputs.
void decode_gemvs(c10::ArrayRef<GemvOut> outs, const float* x, int64_t rows);
void decode_gemvs(c10::ArrayRef<GemvOut> outs, const at::BFloat16* x, int64_t rows);

/// Symmetric per-row int8: scale = max |w| / 127 (1 for an all-zero row), q = round(w / scale).
std::pair<at::Tensor, at::Tensor> quantize_int8_rows(const at::Tensor& weight);

}  // namespace tessera::ops
