// ops/ from C++: the vectorisable exp/log against libm, soft-DTW against a plain O(NM) recursion
// written here (values, gradients by finite differences, lengths), GAK's one-slice closed form.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/ops/decode_linear.h"
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

TEST(DecodeGemvs, OneRegionOverSeveralWeightsIsEachWeightsGemv) {
  at::manual_seed(0);
  const int64_t in = 96, rows = 3;
  // Mixed on purpose: bf16 with a bias, fp32, int8 with scales; outputs of uneven sizes.
  const at::Tensor wb = at::randn({40, in}).to(at::kBFloat16), bias = at::randn({40});
  const at::Tensor wf = at::randn({7, in});
  auto [wq, scale] = quantize_int8_rows(at::randn({65, in}));
  const DecodeWeight dws[] = {decode_weight(wb, bias), decode_weight(wf, {}), decode_weight_int8(wq, scale, {})};
  const at::Tensor x = at::randn({rows, in});
  for (bool bf16_x : {false, true}) {
    const at::Tensor xb = x.to(at::kBFloat16);
    std::vector<std::vector<float>> one(3), many(3);
    std::vector<std::vector<at::BFloat16>> one_b(3), many_b(3);
    std::vector<GemvOut> outs;
    for (int i = 0; i < 3; ++i) {
      const int64_t n = rows * dws[i].out;
      one[i].resize(n), many[i].resize(n), one_b[i].resize(n), many_b[i].resize(n);
      if (bf16_x) {
        decode_gemv(dws[i], xb.data_ptr<at::BFloat16>(), rows, one_b[i].data());
        outs.push_back({&dws[i], nullptr, many_b[i].data()});
      } else {
        decode_gemv(dws[i], x.data_ptr<float>(), rows, one[i].data(), one_b[i].data());
        outs.push_back({&dws[i], many[i].data(), many_b[i].data()});
      }
    }
    if (bf16_x)
      decode_gemvs(outs, xb.data_ptr<at::BFloat16>(), rows);
    else
      decode_gemvs(outs, x.data_ptr<float>(), rows);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(one[i], many[i]) << "weight " << i << (bf16_x ? " (bf16 x)" : "");
      for (size_t j = 0; j < one_b[i].size(); ++j) ASSERT_EQ(one_b[i][j].x, many_b[i][j].x) << "weight " << i;
    }
    // and each against the plain product, so that equal is not equally wrong
    const at::Tensor want = at::linear(x, wb.to(at::kFloat), bias);
    const at::Tensor got = at::from_blob(many_b[0].data(), {rows, 40}, at::kBFloat16).to(at::kFloat);
    EXPECT_TRUE(at::allclose(got, want, 2e-2, 5e-2)) << (got - want).abs().max().item<float>();
  }
  const DecodeWeight other = decode_weight(at::randn({4, in + 1}), {});
  std::vector<float> y(64);
  EXPECT_THROW(decode_gemvs({GemvOut{&dws[1], y.data()}, GemvOut{&other, y.data()}}, x.data_ptr<float>(), rows),
               c10::ValueError);
  const DecodeWeight half = decode_weight(at::randn({4, in}).to(at::kHalf), {});
  EXPECT_THROW(decode_gemvs({GemvOut{&half, y.data()}}, x.data_ptr<float>(), rows), c10::ValueError);
}
