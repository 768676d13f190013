// Rotary position embedding (Su et al. 2021, RoFormer) in the "rotate half" layout that
// transformers' LLaMA uses, with its frequency scalings: linear (position interpolation, Chen et
// al. 2023), dynamic NTK, and Llama 3's band-wise smoothing.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>
#include <utility>

namespace tessera::nn {

/// transformers' rope_parameters (or the older rope_theta + rope_scaling).
struct RopeScaling {
  std::string rope_type = "default";  ///< default | linear | dynamic | llama3
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;   ///< llama3
  double high_freq_factor = 4.0;  ///< llama3
  int64_t original_max_position_embeddings = 0;  ///< llama3 (0: max_position_embeddings)
};

/// The inverse frequencies [dim / 2] (fp32). `seq_len` (dynamic only) is the longest position + 1
/// of the current call: beyond max_position_embeddings the base grows (NTK-aware).
at::Tensor rope_inv_freq(const RopeScaling& rope, int64_t dim, int64_t max_position_embeddings, int64_t seq_len,
                         const c10::Device& device);

/// cos/sin tables [B, L, dim] of `dtype` for integer `positions` [B, L].
std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, const at::Tensor& inv_freq,
                                                at::ScalarType dtype);
/// The default rope type with base `theta`.
std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, int64_t head_dim, double theta,
                                                at::ScalarType dtype);

/// x [B, H, L, D] rotated by the tables (broadcast over heads).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace tessera::nn
