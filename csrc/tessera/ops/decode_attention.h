// Attention of one new query per sequence against the KV cache (a decoding step), in one pass
// per head: scores in fp32, softmax, weighted sum of values. LibTorch's CPU SDPA kernels are
// built for blocks of queries; for one query they spend more time in set-up (and in bf16 GEMM
// packing) than in arithmetic, ~30 us per layer at a 64-token cache.
// nn::attention calls it when `decode_attention_applies`.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace tessera::ops {

/// q [B, H, 1, D], k and v [B, Hk, K, D] (H a multiple of Hk: grouped-query heads), additive
/// mask broadcastable to [B, H, 1, K] or undefined; CPU, fp32 or bf16, no autograd, no dropout.
bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              double dropout_p);

/// softmax(q k^T * scale + mask) v, [B, H, 1, D] in q's dtype; scale defaults to 1/sqrt(D).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::optional<double> scale);

}  // namespace tessera::ops
