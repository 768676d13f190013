// The soft-DTW kernels behind ops::soft_dtw, one pair per device. Each device keeps the tables
// its backward needs in its own layout (SoftDtwTables); soft_dtw.cpp only passes them through.
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::ops::detail {

struct SoftDtwTables {
  at::Tensor cost;  ///< what the backward needs of the cost, if anything (CPU: nothing)
  at::Tensor r;     ///< the DP table R (CPU: [chunks, N + 2, M + 2, lanes]; CUDA: [B, N + 2, M + 2])
};

/// Forward: R over every pair, returns R[b, n_b, m_b] as [B]. `n`, `m`: int64 [B] on the cost's
/// device, already checked to lie in [1, N] and [1, M]. gamma == 0 is hard DTW.
using SoftDtwForward = at::Tensor (*)(const at::Tensor& cost, double gamma, const at::Tensor& n, const at::Tensor& m,
                                      SoftDtwTables& keep);
/// Backward: d out[b] / d cost[b] * grad_out[b], shaped like the cost [B, N, M].
using SoftDtwBackward = at::Tensor (*)(const SoftDtwTables& keep, double gamma, const at::Tensor& n,
                                       const at::Tensor& m, const at::Tensor& grad_out, int64_t N, int64_t M);

at::Tensor soft_dtw_forward_cpu(const at::Tensor& cost, double gamma, const at::Tensor& n, const at::Tensor& m,
                                SoftDtwTables& keep);
at::Tensor soft_dtw_backward_cpu(const SoftDtwTables& keep, double gamma, const at::Tensor& n, const at::Tensor& m,
                                 const at::Tensor& grad_out, int64_t N, int64_t M);

/// The CUDA pair, set by soft_dtw_cuda.cu when the library is built with CUDA (else null).
struct SoftDtwCuda {
  SoftDtwForward forward = nullptr;
  SoftDtwBackward backward = nullptr;
};
SoftDtwCuda& soft_dtw_cuda();

}  // namespace tessera::ops::detail
