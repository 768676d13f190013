// soft-DTW's CUDA kernels: one thread block per pair walks the table by anti-diagonals
// (soft_dtw_wavefront.h holds the per-diagonal code), __syncthreads between diagonals. Pairs are
// independent, so the grid is the batch. R lives in global memory ([B, N+2, M+2]): a diagonal of
// a long pair does not fit in shared memory, and the few diagonals a step reads stay in L1/L2.
// No ATen here (tensors, streams, checks: soft_dtw_cuda.cpp): nvcc through ATen's headers
// cost ~35 s of CPU per build, these kernels alone ~2 s.
//
// A table written and read within one kernel (R forward, the pushes W backward) must not go
// through the read-only cache, so its pointer is never `const __restrict__` there.
#include "tessera/ops/soft_dtw_cuda.h"
#include "tessera/ops/soft_dtw_wavefront.h"

namespace tessera::ops::detail {
namespace {

// Threads per block: a diagonal has up to min(N, M) cells; beyond this each thread takes several.
// 512 leaves each thread 128 registers (1024 would cap the fp64 kernels at 64).
constexpr int kMaxThreads = 512;

int threads_for(int64_t N, int64_t M) {
  const int64_t longest = N < M ? N : M, warps = (longest + 31) / 32;
  return warps * 32 < kMaxThreads ? static_cast<int>(warps * 32) : kMaxThreads;
}

template <class T, bool Hard>
__global__ void __launch_bounds__(kMaxThreads)
    forward_kernel(T* R, const T* __restrict__ cost, const int64_t* __restrict__ n, const int64_t* __restrict__ m,
                   T* __restrict__ out, int64_t N, int64_t M, T gamma) {
  const int64_t b = blockIdx.x, t = threadIdx.x, stride = blockDim.x;
  const int64_t nb = n[b], mb = m[b];
  T* Rb = R + b * (N + 2) * (M + 2);
  const T* Cb = cost + b * N * M;
  wavefront::init_borders(Rb, M, nb, mb, t, stride);
  __syncthreads();
  for (int64_t d = 2; d <= nb + mb; ++d) {
    wavefront::forward_diagonal<T, Hard>(Rb, Cb, M, nb, mb, d, gamma, t, stride);
    __syncthreads();
  }
  if (t == 0) out[b] = Rb[nb * (M + 2) + mb];
}

template <class T, bool Hard>
__global__ void __launch_bounds__(kMaxThreads)
    backward_kernel(T* E, T* W, const T* __restrict__ R, const int64_t* __restrict__ n, const int64_t* __restrict__ m,
                    int64_t N, int64_t M, T gamma) {
  const int64_t b = blockIdx.x, t = threadIdx.x, stride = blockDim.x;
  const int64_t nb = n[b], mb = m[b];
  T* Eb = E + b * N * M;
  T* Wb = W + b * wavefront::pushes_size(N);
  const T* Rb = R + b * (N + 2) * (M + 2);
  for (int64_t d = nb + mb; d >= 2; --d) {
    wavefront::backward_diagonal<T, Hard>(Eb, Wb, Rb, N, M, nb, mb, d, gamma, t, stride);
    __syncthreads();
  }
}

}  // namespace

template <class T>
void launch_soft_dtw_forward(T* R, const T* cost, const int64_t* n, const int64_t* m, T* out, int64_t B, int64_t N,
                             int64_t M, T gamma, cudaStream_t stream) {
  const auto kernel = gamma == 0 ? forward_kernel<T, true> : forward_kernel<T, false>;
  kernel<<<static_cast<unsigned>(B), threads_for(N, M), 0, stream>>>(R, cost, n, m, out, N, M, gamma);
}

template <class T>
void launch_soft_dtw_backward(T* E, T* W, const T* R, const int64_t* n, const int64_t* m, int64_t B, int64_t N,
                              int64_t M, T gamma, cudaStream_t stream) {
  const auto kernel = gamma == 0 ? backward_kernel<T, true> : backward_kernel<T, false>;
  kernel<<<static_cast<unsigned>(B), threads_for(N, M), 0, stream>>>(E, W, R, n, m, N, M, gamma);
}

template void launch_soft_dtw_forward<float>(float*, const float*, const int64_t*, const int64_t*, float*, int64_t,
                                             int64_t, int64_t, float, cudaStream_t);
template void launch_soft_dtw_forward<double>(double*, const double*, const int64_t*, const int64_t*, double*,
                                              int64_t, int64_t, int64_t, double, cudaStream_t);
template void launch_soft_dtw_backward<float>(float*, float*, const float*, const int64_t*, const int64_t*, int64_t,
                                              int64_t, int64_t, float, cudaStream_t);
template void launch_soft_dtw_backward<double>(double*, double*, const double*, const int64_t*, const int64_t*,
                                               int64_t, int64_t, int64_t, double, cudaStream_t);

}  // namespace tessera::ops::detail
