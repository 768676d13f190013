// The soft-DTW CUDA launches (soft_dtw_cuda.cu) behind the CUDA kernels of ops::soft_dtw
// (soft_dtw_cuda.cpp): raw pointers and a stream, so that nvcc compiles no ATen header.
// Every pointer is on one device; n, m: int64 [B] per-pair lengths in [1, N] and [1, M].
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace tessera::ops::detail {

/// R: [B, N+2, M+2] (written), cost: contiguous [B, N, M], out: [B] = R[b, n_b, m_b].
template <class T>
void launch_soft_dtw_forward(T* R, const T* cost, const int64_t* n, const int64_t* m, T* out, int64_t B, int64_t N,
                             int64_t M, T gamma, cudaStream_t stream);
/// E: [B, N, M], zero on entry, gets d out[b] / d cost[b]; W: [B, pushes_size(N)] scratch.
template <class T>
void launch_soft_dtw_backward(T* E, T* W, const T* R, const int64_t* n, const int64_t* m, int64_t B, int64_t N,
                              int64_t M, T gamma, cudaStream_t stream);

}  // namespace tessera::ops::detail
