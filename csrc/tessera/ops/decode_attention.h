// Attention of one new query per sequence against the KV cache (a decoding step), in one pass
// per head: scores in fp32, softmax, weighted sum of values. LibTorch's CPU SDPA kernels are
// built for blocks of queries; for one query they spend more time in set-up (and in bf16 GEMM
// packing) than in arithmetic, ~30 us per layer at a 64-token cache.
// nn::attention calls it when `decode_attention_applies`.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <optional>

namespace tessera::ops {

/// q [B, H, 1, D], k and v [B, Hk, K, D] (H a multiple of Hk: grouped-query heads), additive
/// mask broadcastable to [B, H, 1, K] or undefined; CPU, fp32 or bf16, no autograd, no dropout.
bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              double dropout_p);

/// softmax(q k^T * scale + mask) v, [B, H, 1, D] in q's dtype; scale defaults to 1/sqrt(D).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                            std::optional<double> scale);

namespace detail {

/// decode_attention on raw pointers, for a fused layer with its own buffers: element strides of
/// q [B, H, D], k and v [B, Hk, K, D] (each head's D contiguous), an additive mask [B, H, K] or
/// nullptr, and the output [B, H, D].
template <typename T>
struct DecodeAttentionArgs {
  const T* q = nullptr;
  int64_t q_b = 0, q_h = 0;
  const T* k = nullptr;
  int64_t k_b = 0, k_h = 0, k_s = 0;
  const T* v = nullptr;
  int64_t v_b = 0, v_h = 0, v_s = 0;
  const T* mask = nullptr;
  int64_t m_b = 0, m_h = 0, m_k = 0;
  T* out = nullptr;
  int64_t o_b = 0, o_h = 0;
  int64_t B = 0, H = 0, Hk = 0, K = 0, D = 0;
  float scale = 1.0f;
};

void decode_attention_run(const DecodeAttentionArgs<float>& a);
void decode_attention_run(const DecodeAttentionArgs<at::BFloat16>& a);

}  // namespace detail

}  // namespace tessera::ops
