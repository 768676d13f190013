// ops::soft_dtw's CUDA pair (SoftDtwCuda): tables, device guard, the current stream and launch
// checks around the kernels of soft_dtw_cuda.cu, registered when the library loads. Built only
// with TESSERA_CUDA (CMake drops *_cuda.cpp otherwise), by the host compiler with the PCH.
#include "tessera/ops/soft_dtw_cuda.h"
#include "tessera/ops/soft_dtw_kernels.h"
#include "tessera/ops/soft_dtw_wavefront.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <limits>

namespace tessera::ops::detail {
namespace {

void check_grid(int64_t B) {
  TORCH_CHECK(B <= std::numeric_limits<int32_t>::max(), "soft_dtw: at most 2^31 - 1 pairs on CUDA, got ", B);
}

at::Tensor forward_cuda(const at::Tensor& cost, double gamma, const at::Tensor& n, const at::Tensor& m,
                        SoftDtwTables& keep) {
  const c10::cuda::CUDAGuard guard(cost.device());
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  check_grid(B);
  // Cells outside a pair's region stay unset (never read); the backward needs R alone.
  keep.r = at::empty({B, N + 2, M + 2}, cost.options());
  at::Tensor out = at::empty({B}, cost.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(cost.device().index());
  AT_DISPATCH_FLOATING_TYPES(cost.scalar_type(), "soft_dtw_cuda", [&] {
    launch_soft_dtw_forward<scalar_t>(keep.r.data_ptr<scalar_t>(), cost.const_data_ptr<scalar_t>(),
                                      n.const_data_ptr<int64_t>(), m.const_data_ptr<int64_t>(),
                                      out.data_ptr<scalar_t>(), B, N, M, static_cast<scalar_t>(gamma), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor backward_cuda(const SoftDtwTables& keep, double gamma, const at::Tensor& n, const at::Tensor& m,
                         const at::Tensor& grad_out, int64_t N, int64_t M) {
  const c10::cuda::CUDAGuard guard(keep.r.device());
  const int64_t B = keep.r.size(0);
  at::Tensor E = at::zeros({B, N, M}, keep.r.options());  // zero outside each pair's region
  at::Tensor W = at::empty({B, wavefront::pushes_size(N)}, keep.r.options());  // only what was written is read
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(keep.r.device().index());
  AT_DISPATCH_FLOATING_TYPES(keep.r.scalar_type(), "soft_dtw_backward_cuda", [&] {
    launch_soft_dtw_backward<scalar_t>(E.data_ptr<scalar_t>(), W.data_ptr<scalar_t>(),
                                       keep.r.const_data_ptr<scalar_t>(), n.const_data_ptr<int64_t>(),
                                       m.const_data_ptr<int64_t>(), B, N, M, static_cast<scalar_t>(gamma), stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return E.mul_(grad_out.to(E.scalar_type()).view({B, 1, 1}));
}

[[maybe_unused]] const bool soft_dtw_cuda_registered = [] {
  auto& kernels = soft_dtw_cuda();
  kernels.forward = forward_cuda;
  kernels.backward = backward_cuda;
  return true;
}();

}  // namespace
}  // namespace tessera::ops::detail
