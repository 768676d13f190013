// Rotary position embedding (Su et al. 2021, RoFormer) in the "rotate half" layout that
// transformers' LLaMA uses.
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>

namespace tessera::nn {

/// cos/sin tables [B, L, head_dim] for integer `positions` [B, L] (theta = rope base).
std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& positions, int64_t head_dim, double theta,
                                                at::ScalarType dtype);
/// x [B, H, L, D] rotated by the tables (broadcast over heads).
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace tessera::nn
