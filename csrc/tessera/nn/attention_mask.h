// Building attention masks in one convention: an additive float mask broadcastable to
// [batch, heads, q_len, k_len], 0 where attention is allowed and the dtype's lowest value where
// it is not (as Hugging Face does: a fully masked row then averages instead of giving NaN).
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::nn {

/// Refuses a [B, K] padding mask that is not 0/1 or has a row without any real token.
void check_padding_mask(const at::Tensor& attention_mask);

/// From a [B, K] 0/1 padding mask (1 = keep) to an additive [B, 1, 1, K] mask of `dtype`.
at::Tensor padding_mask(const at::Tensor& attention_mask, at::ScalarType dtype);

/// Additive causal mask [1, 1, Q, K]: query i (at absolute position past_len + i) sees keys <= it.
at::Tensor causal_mask(int64_t q_len, int64_t k_len, at::ScalarType dtype, const at::Device& device);

/// From any bool (true = keep) or 0/1 integer mask broadcastable to [B, H, Q, K] to additive.
at::Tensor additive_mask(const at::Tensor& keep, at::ScalarType dtype);

}  // namespace tessera::nn
