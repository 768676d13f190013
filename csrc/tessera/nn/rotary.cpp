// RoPE as in transformers' LlamaRotaryEmbedding (default rope type): frequencies in fp32.
#include "tessera/nn/rotary.h"

#include <ATen/ATen.h>

namespace tessera::nn {

std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, int64_t head_dim, double theta,
                                                at::ScalarType dtype) {
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  at::Tensor inv_freq = 1.0 / at::pow(theta, at::arange(0, head_dim, 2, f32) / static_cast<double>(head_dim));
  // [B, L, 1] * [1, 1, D/2] -> [B, L, D/2], duplicated to [B, L, D]
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

}  // namespace tessera::nn
