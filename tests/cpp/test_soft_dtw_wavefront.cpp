// The CUDA kernels' per-diagonal code (ops/soft_dtw_wavefront.h) run on the host: a thread block
// emulated thread by thread on each anti-diagonal, against ops::soft_dtw on the CPU. This is the
// check that code gets without a GPU; tests/python/test_soft_dtw_cuda.py runs the kernels.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/ops/soft_dtw.h"
#include "tessera/ops/soft_dtw_wavefront.h"

#include <limits>
#include <tuple>

namespace wf = tessera::ops::detail::wavefront;

namespace {

/// One pair through soft_dtw_cuda.cu's schedule with `threads` threads; returns R[n][m], fills E.
template <class T, bool Hard>
T run_pair(T* R, T* E, T* W, const T* C, int64_t N, int64_t M, int64_t n, int64_t m, T gamma, int64_t threads) {
  for (int64_t t = 0; t < threads; ++t) wf::init_borders(R, M, n, m, t, threads);
  for (int64_t d = 2; d <= n + m; ++d)
    for (int64_t t = 0; t < threads; ++t) wf::forward_diagonal<T, Hard>(R, C, M, n, m, d, gamma, t, threads);
  for (int64_t d = n + m; d >= 2; --d)
    for (int64_t t = 0; t < threads; ++t) wf::backward_diagonal<T, Hard>(E, W, R, N, M, n, m, d, gamma, t, threads);
  return R[n * (M + 2) + m];
}

/// Value [B] and d value / d cost (unscaled) through the emulated kernels. R and the pushes W
/// start as NaN, so reading what the kernels leave unset would show in the result.
std::tuple<at::Tensor, at::Tensor> emulate(const at::Tensor& cost, double gamma, const at::Tensor& n,
                                           const at::Tensor& m, int64_t threads) {
  const int64_t B = cost.size(0), N = cost.size(1), M = cost.size(2);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor R = at::full({B, N + 2, M + 2}, nan, cost.options()), W = at::full({wf::pushes_size(N)}, nan, cost.options());
  at::Tensor E = at::zeros_like(cost), value = at::empty({B}, cost.options());
  AT_DISPATCH_FLOATING_TYPES(cost.scalar_type(), "emulate", [&] {
    const auto g = static_cast<scalar_t>(gamma);
    for (int64_t b = 0; b < B; ++b) {
      scalar_t* r = R[b].data_ptr<scalar_t>();
      scalar_t* e = E[b].data_ptr<scalar_t>();
      scalar_t* w = W.data_ptr<scalar_t>();
      const scalar_t* c = cost[b].data_ptr<scalar_t>();
      const int64_t nb = n[b].item<int64_t>(), mb = m[b].item<int64_t>();
      value[b] = gamma == 0 ? run_pair<scalar_t, true>(r, e, w, c, N, M, nb, mb, g, threads)
                            : run_pair<scalar_t, false>(r, e, w, c, N, M, nb, mb, g, threads);
    }
  });
  return {value, E};
}

/// The CPU op's value and gradient for a given incoming gradient.
std::tuple<at::Tensor, at::Tensor> reference(const at::Tensor& cost, double gamma, const at::Tensor& n,
                                             const at::Tensor& m, const at::Tensor& grad_out) {
  at::Tensor leaf = cost.detach().clone().requires_grad_(true);
  at::Tensor value = tessera::ops::soft_dtw(leaf, gamma, n, m);
  value.backward(grad_out);
  return {value.detach(), leaf.grad()};
}

/// max |a - b| / max |b|: the error relative to the tensor's scale.
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(b.abs().max().item<double>(), 1e-300);
}

at::Tensor squared_distances(int64_t B, int64_t N, int64_t M, at::ScalarType dtype) {
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  return at::cdist(at::randn({B, N, 3}, opts), at::randn({B, M, 3}, opts)).pow(2).to(dtype);
}

struct Case {
  at::ScalarType dtype;
  double gamma;
  int64_t threads;
};

class Wavefront : public ::testing::TestWithParam<Case> {};

// N != M and per-pair lengths (1, full, in between); 1 and 4 threads make every diagonal longer
// than the block, 32 some of them.
TEST_P(Wavefront, MatchesTheCpuKernel) {
  const Case c = GetParam();
  at::manual_seed(3);
  const int64_t N = 37, M = 23;
  const at::Tensor cost = squared_distances(6, N, M, c.dtype);
  const at::Tensor n = at::tensor({37, 1, 20, 37, 5, 36}, at::kLong), m = at::tensor({23, 7, 1, 11, 23, 22}, at::kLong);
  const at::Tensor grad_out = at::randn({6}, cost.options());
  const auto [value, E] = emulate(cost, c.gamma, n, m, c.threads);
  const auto [ref_value, ref_grad] = reference(cost, c.gamma, n, m, grad_out);
  const at::Tensor grad = E * grad_out.view({6, 1, 1});
  if (c.gamma == 0) {  // min and + round alike everywhere: the same path, bit for bit
    EXPECT_TRUE(at::equal(value, ref_value)) << value << ref_value;
    EXPECT_TRUE(at::equal(grad, ref_grad));
  } else {
    const double tol = c.dtype == at::kDouble ? 1e-12 : 1e-5;
    EXPECT_LT(((value - ref_value).abs() / ref_value.abs()).max().item<double>(), tol);
    EXPECT_LT(rel_err(grad, ref_grad), tol);
  }
}

INSTANTIATE_TEST_SUITE_P(All, Wavefront,
                         ::testing::Values(Case{at::kDouble, 1.0, 1}, Case{at::kDouble, 0.1, 4},
                                           Case{at::kDouble, 0.0, 32}, Case{at::kFloat, 1.0, 4},
                                           Case{at::kFloat, 0.1, 32}, Case{at::kFloat, 0.0, 1}));

// Hard DTW on small integer costs: ties everywhere, so the subgradient's tie rule decides.
TEST(Wavefront, HardTiesPickTheCpuPath) {
  at::manual_seed(4);
  const at::Tensor cost = at::randint(0, 3, {4, 19, 17}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor n = at::tensor({19, 12, 19, 3}, at::kLong), m = at::tensor({17, 17, 9, 2}, at::kLong);
  const at::Tensor grad_out = at::ones({4}, cost.options());
  const auto [value, E] = emulate(cost, 0.0, n, m, 3);
  const auto [ref_value, ref_grad] = reference(cost, 0.0, n, m, grad_out);
  EXPECT_TRUE(at::equal(value, ref_value));
  EXPECT_TRUE(at::equal(E, ref_grad));
}

// The length the GPU test uses, beyond a 512-thread block: fp32 with libm's exp/log (as on the
// GPU) against the CPU's vectorised ones stays within that test's 1e-5 (measured: 2e-6).
TEST(Wavefront, LongFloatPairAgreesWithTheCpuKernel) {
  at::manual_seed(5);
  const int64_t L = 1500;
  const at::Tensor cost = squared_distances(1, L, L, at::kFloat);
  const at::Tensor n = at::tensor({L}, at::kLong), m = at::tensor({L - 100}, at::kLong);
  const auto [value, E] = emulate(cost, 1.0, n, m, 512);
  const auto [ref_value, ref_grad] = reference(cost, 1.0, n, m, at::ones({1}, cost.options()));
  EXPECT_LT(((value - ref_value).abs() / ref_value.abs()).max().item<double>(), 1e-5);
  EXPECT_LT(rel_err(E, ref_grad), 1e-5);
}

}  // namespace
