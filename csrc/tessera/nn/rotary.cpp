// RoPE as in transformers' LlamaRotaryEmbedding and its rope_init_functions: frequencies in fp32.
#include "tessera/nn/rotary.h"

#include "tessera/ops/decode_elementwise.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::nn {

at::Tensor rope_inv_freq(const RopeScaling& rope, int64_t dim, int64_t max_position_embeddings, int64_t seq_len,
                         const c10::Device& device) {
  auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  const auto exponents = at::arange(0, dim, 2, at::TensorOptions().dtype(at::kLong).device(device)).to(at::kFloat) /
                         static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(rope.theta, exponents);
  if (rope.rope_type == "dynamic" && seq_len > max_position_embeddings) {
    // The grown base in fp32, as transformers computes it from a tensor sequence length.
    const double f = rope.factor;
    at::Tensor len = at::scalar_tensor(static_cast<double>(seq_len), f32);
    at::Tensor base = rope.theta * (f * len / static_cast<double>(max_position_embeddings) - (f - 1.0))
                                       .pow(static_cast<double>(dim) / static_cast<double>(dim - 2));
    inv_freq = 1.0 / base.pow(exponents);
  }
  if (rope.rope_type == "linear") return inv_freq / rope.factor;
  if (rope.rope_type != "llama3") return inv_freq.to(f32);
  // Llama 3: long wavelengths divided by `factor`, short ones kept, the band between blended.
  const double old_len = static_cast<double>(rope.original_max_position_embeddings > 0
                                                 ? rope.original_max_position_embeddings
                                                 : max_position_embeddings);
  const double low_wavelen = old_len / rope.low_freq_factor, high_wavelen = old_len / rope.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq);
  at::Tensor smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
  at::Tensor blended = (1 - smooth) * scaled / rope.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return at::where(medium, blended, scaled);
}

std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, const at::Tensor& inv_freq,
                                                at::ScalarType dtype) {
  // [B, L, 1] * [1, 1, D/2] -> [B, L, D/2], duplicated to [B, L, D]
  at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq.to(positions.device()).view({1, 1, -1});
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, int64_t head_dim, double theta,
                                                at::ScalarType dtype) {
  RopeScaling rope;
  rope.theta = theta;
  return rotary_tables(positions, rope_inv_freq(rope, head_dim, 0, 0, positions.device()), dtype);
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  if (x.dim() == 4 && cos.dim() == 3 && cos.sizes() == sin.sizes() && cos.size(0) == x.size(0) &&
      cos.size(1) == x.size(2) && cos.size(2) == x.size(3) && x.size(3) % 2 == 0 &&
      ops::decode_elementwise_applies(x, x.size(0) * x.size(2), {cos, sin}))
    return ops::decode_rotary(x, cos, sin);
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

}  // namespace tessera::nn
