// Soft dynamic time warping (Cuturi & Blondel, ICML 2017) as an autograd op: the soft minimum,
// over every monotone alignment of two sequences, of the summed cost along it.
//
//   at::Tensor cost = at::cdist(x, y).pow(2);             // [B, N, M]
//   at::Tensor d = tessera::ops::soft_dtw(cost, 0.1);      // [B]
//   d.sum().backward();                                    // d/d cost = the expected alignment
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::ops {

/// R[i, j] = cost[i, j] + softmin_gamma(R[i-1, j-1], R[i-1, j], R[i, j-1]), R[0, 0] = 0, and
/// softmin_gamma(v) = -gamma log sum_k exp(-v_k / gamma); the result is R[N, M] per pair.
///
/// - `cost`: [B, N, M] or [N, M] (then the result is 0-d), float or double, finite, CPU or CUDA.
/// - `gamma` >= 0; 0 is hard DTW, whose gradient is the optimal path's indicator, with ties
///   going to the first minimum in the order (i-1, j-1), (i-1, j), (i, j-1).
/// - `x_lengths`, `y_lengths`: optional int [B]; pair b then ends at R[x_lengths[b], y_lengths[b]]
///   and the cost outside [0, n_b) x [0, m_b) is ignored (gets zero gradient). Both or neither.
///
/// Computed in log space (every exponent is <= 0), so fp32 stays finite at any length; the
/// backward is the expected-alignment recursion (algorithm 2), not autograd through the table.
at::Tensor soft_dtw(const at::Tensor& cost, double gamma = 1.0, const at::Tensor& x_lengths = {},
                    const at::Tensor& y_lengths = {});

}  // namespace tessera::ops
