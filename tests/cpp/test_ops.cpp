// ops/ from C++: the vectorisable exp/log against libm, soft-DTW against a plain O(NM) recursion
// written here (values, gradients by finite differences, lengths), GAK's one-slice closed form.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/ops/fast_math.h"
#include "tessera/ops/gak.h"
#include "tessera/ops/soft_dtw.h"

#include <cmath>
#include <limits>
#include <vector>

using namespace tessera::ops;

namespace {

double reference_soft_dtw(const at::Tensor& cost, double gamma) {
  const int64_t n = cost.size(0), m = cost.size(1);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> r(n + 1, std::vector<double>(m + 1, inf));
  r[0][0] = 0;
  auto c = cost.accessor<double, 2>();
  for (int64_t i = 1; i <= n; ++i)
    for (int64_t j = 1; j <= m; ++j) {
      const double v[3] = {r[i - 1][j - 1], r[i - 1][j], r[i][j - 1]};
      double lo = std::min({v[0], v[1], v[2]}), soft = lo;
      if (gamma > 0) {
        double s = 0;
        for (double x : v) s += std::exp(-(x - lo) / gamma);
        soft = lo - gamma * std::log(s);
      }
      r[i][j] = c[i - 1][j - 1] + soft;
    }
  return r[n][m];
}

}  // namespace

TEST(FastMath, ExpMatchesLibmOverTheRangeUsed) {
  double worst = 0;
  for (float x = -87.0f; x <= 0.0f; x += 0.00137f) {
    const double ref = std::exp(double(x));
    worst = std::max(worst, std::abs(tessera::ops::detail::fast_exp(x) - ref) / ref);
  }
  EXPECT_LT(worst, 4e-7);
  EXPECT_EQ(tessera::ops::detail::fast_exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(tessera::ops::detail::fast_exp(-100.0f), 0.0f);
  EXPECT_FLOAT_EQ(tessera::ops::detail::fast_exp(0.0f), 1.0f);
}

TEST(FastMath, LogMatchesLibm) {
  double worst = 0;
  for (float x = 1e-30f; x < 1e30f; x *= 1.0009f) worst = std::max(worst, std::abs(tessera::ops::detail::fast_log(x) - std::log(double(x))));
  EXPECT_LT(worst, 1e-5);  // absolute: |log x| reaches 69 here
  double worst_unit = 0;   // soft-DTW takes the log of a sum in [1, 3]
  for (float x = 1.0f; x <= 3.0f; x += 1e-4f)
    worst_unit = std::max(worst_unit, std::abs(tessera::ops::detail::fast_log(x) - std::log(double(x))));
  EXPECT_LT(worst_unit, 2e-7);
}

TEST(SoftDtw, EqualsThePlainRecursionInBothPrecisions) {
  at::manual_seed(0);
  for (double gamma : {1.0, 0.1, 0.0}) {
    const at::Tensor cost = at::rand({19, 7, 5}, at::kDouble);
    const at::Tensor ours = soft_dtw(cost, gamma), ours32 = soft_dtw(cost.to(at::kFloat), gamma);
    for (int64_t b = 0; b < 19; ++b) {
      const double ref = reference_soft_dtw(cost[b], gamma);
      EXPECT_NEAR(ours[b].item<double>(), ref, 1e-12);
      EXPECT_NEAR(ours32[b].item<double>(), ref, 1e-5);
    }
  }
}

TEST(SoftDtw, GradientIsTheFiniteDifference) {
  at::manual_seed(1);
  const at::Tensor cost = at::rand({4, 5}, at::kDouble).requires_grad_(true);
  soft_dtw(cost, 0.5).backward();
  const at::Tensor grad = cost.grad();
  const double h = 1e-6;
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 5; ++j) {
      at::Tensor up = cost.detach().clone(), down = cost.detach().clone();
      up[i][j] += h;
      down[i][j] -= h;
      const double fd = (reference_soft_dtw(up, 0.5) - reference_soft_dtw(down, 0.5)) / (2 * h);
      EXPECT_NEAR(grad[i][j].item<double>(), fd, 1e-7);
    }
}

TEST(SoftDtw, LengthsReadTheShorterPair) {
  const at::Tensor cost = at::rand({2, 6, 6}, at::kDouble);
  const at::Tensor out = soft_dtw(cost, 0.3, at::tensor({3, 6}), at::tensor({6, 2}));
  EXPECT_NEAR(out[0].item<double>(), reference_soft_dtw(cost[0].narrow(0, 0, 3), 0.3), 1e-12);
  EXPECT_NEAR(out[1].item<double>(), reference_soft_dtw(cost[1].narrow(1, 0, 2), 0.3), 1e-12);
  EXPECT_THROW(soft_dtw(cost, 0.3, at::tensor({7, 6}), at::tensor({6, 2})), c10::ValueError);
}

TEST(Gak, OneSliceIsSOverTwoMinusS) {
  const at::Tensor a = at::tensor({0.6, 0.8}, at::kDouble).view({1, 2}), b = at::tensor({1.0, 0.0}, at::kDouble).view({1, 2});
  GakOptions o;
  o.delta = 0.7;
  const double s = std::exp(-(1 - 0.6) / (0.7 * 0.7));
  EXPECT_NEAR(gak(a, b, o).item<double>(), s / (2 - s), 1e-12);
}
