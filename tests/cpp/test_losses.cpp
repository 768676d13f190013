// losses/ against plain formulas written here: CLIP InfoNCE (single process, local and global
// gathered forms), SigLIP (single process and gathered texts), logit-scale clamp, bad input.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/losses/clip_loss.h"
#include "tessera/losses/siglip_loss.h"

#include <cmath>
#include <vector>

using namespace tessera::losses;

namespace {

at::TensorOptions f64() { return at::TensorOptions().dtype(at::kDouble); }

at::Tensor leaf(at::Tensor t) { return t.detach().requires_grad_(true); }

// mean_i [logsumexp_j l_ij - l_ii] over both directions, halved.
at::Tensor reference_clip(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale) {
  at::Tensor l = scale * at::matmul(img, txt.t());
  at::Tensor diag = l.diagonal();
  at::Tensor rows = (at::logsumexp(l, 1) - diag).mean();
  at::Tensor cols = (at::logsumexp(l, 0) - diag).mean();
  return (rows + cols) / 2;
}

// sum_ij softplus(-z_ij l_ij) / B, z = +1 on the diagonal, -1 elsewhere.
at::Tensor reference_siglip(const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
                            const at::Tensor& bias) {
  at::Tensor l = scale * at::matmul(img, txt.t()) + bias;
  at::Tensor z = 2 * at::eye(img.size(0), f64()) - 1;
  return at::log1p(at::exp(-z * l)).sum() / img.size(0);
}

std::vector<at::Tensor> grads(const at::Tensor& loss, const std::vector<at::Tensor>& leaves) {
  for (const auto& t : leaves) t.mutable_grad() = at::Tensor();
  loss.backward();
  std::vector<at::Tensor> out;
  for (const auto& t : leaves) out.push_back(t.grad().clone());
  return out;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double tol = 1e-10) {
  ASSERT_EQ(a.sizes(), b.sizes());
  EXPECT_TRUE(at::allclose(a, b, tol, tol)) << "max abs diff " << (a - b).abs().max().item<double>();
}

}  // namespace

TEST(ClipLoss, MatchesFormulaAndGradients) {
  at::manual_seed(0);
  for (auto [batch, dim] : std::vector<std::pair<int64_t, int64_t>>{{1, 3}, {4, 8}, {7, 5}, {16, 32}}) {
    at::Tensor img = leaf(at::randn({batch, dim}, f64())), txt = leaf(at::randn({batch, dim}, f64()));
    at::Tensor scale = leaf(at::scalar_tensor(3.5, f64()));
    auto ours = grads(clip_loss(img, txt, scale).contrastive_loss, {img, txt, scale});
    at::Tensor ref_loss = reference_clip(img, txt, scale);
    auto ref = grads(ref_loss, {img, txt, scale});
    expect_close(clip_loss(img, txt, scale).contrastive_loss, ref_loss);
    // open_clip's nonscalar_logit_scale: a [1] parameter works the same.
    expect_close(clip_loss(img, txt, scale.view({1})).contrastive_loss, ref_loss);
    for (size_t i = 0; i < ours.size(); ++i) expect_close(ours[i], ref[i]);
  }
}

TEST(ClipLoss, GatheredFormsAgreeWithOneProcess) {
  // World of 3 simulated ranks of 4: the global form equals the single-process loss on every
  // rank; the local form's per-rank losses average to it.
  at::manual_seed(1);
  const int64_t world = 3, batch = 4;
  at::Tensor all_img = at::randn({world * batch, 6}, f64()), all_txt = at::randn({world * batch, 6}, f64());
  at::Tensor scale = at::scalar_tensor(2.0, f64());
  at::Tensor single = reference_clip(all_img, all_txt, scale);
  at::Tensor local_sum = at::zeros({}, f64());
  for (int64_t r = 0; r < world; ++r) {
    at::Tensor img = all_img.narrow(0, r * batch, batch), txt = all_txt.narrow(0, r * batch, batch);
    auto global = clip_loss(img, txt, scale, all_img, all_txt, ClipLossOptions().rank(r));
    expect_close(global.contrastive_loss, single);
    EXPECT_EQ(global.logits_per_image.sizes(), (std::vector<int64_t>{world * batch, world * batch}));
    auto local = clip_loss(img, txt, scale, all_img, all_txt, ClipLossOptions().local_loss(true).rank(r));
    EXPECT_EQ(local.logits_per_image.sizes(), (std::vector<int64_t>{batch, world * batch}));
    local_sum = local_sum + local.contrastive_loss;
  }
  expect_close(local_sum / world, single);
  expect_close(clip_loss_labels(batch, true, 2, at::kCPU), at::arange(8, 12, at::kLong));
  expect_close(clip_loss_labels(batch, false, 2, at::kCPU), at::arange(0, 4, at::kLong));
}

TEST(ClipLoss, BiasCancelsInTheSoftmax) {
  at::Tensor img = at::randn({5, 4}, f64()), txt = at::randn({5, 4}, f64());
  at::Tensor scale = at::scalar_tensor(10.0, f64()), bias = leaf(at::scalar_tensor(-3.0, f64()));
  auto with_bias = clip_loss(img, txt, scale, {}, {}, {}, bias);
  expect_close(with_bias.contrastive_loss, clip_loss(img, txt, scale).contrastive_loss);
  with_bias.contrastive_loss.backward();
  EXPECT_NEAR(bias.grad().item<double>(), 0.0, 1e-12);
}

TEST(ClipLoss, ClampLogitScaleIsInPlaceOnTheLogParameter) {
  at::Tensor p = leaf(at::scalar_tensor(7.0, f64()));
  at::Tensor same = clamp_logit_scale(p);
  EXPECT_TRUE(same.is_same(p));
  EXPECT_NEAR(p.item<double>(), std::log(100.0), 1e-12);
  p.detach().fill_(-1.0);
  clamp_logit_scale(p, 50.0);
  EXPECT_EQ(p.item<double>(), 0.0);
  EXPECT_TRUE(p.requires_grad());
}

TEST(ClipLoss, RejectsBadInput) {
  at::Tensor img = at::randn({4, 8}), txt = at::randn({4, 8}), s = at::scalar_tensor(1.0);
  EXPECT_THROW(clip_loss(img, at::randn({3, 8}), s), c10::ValueError);
  EXPECT_THROW(clip_loss(img.view({4, 2, 4}), txt.view({4, 2, 4}), s), c10::ValueError);
  EXPECT_THROW(clip_loss(img, txt, at::ones({2})), c10::ValueError);
  EXPECT_THROW(clip_loss(img, txt, s, at::randn({8, 8})), c10::ValueError);  // only one gathered tensor
  EXPECT_THROW(clip_loss(img, txt, s, at::randn({10, 8}), at::randn({10, 8})), c10::ValueError);
  EXPECT_THROW(clip_loss(img, txt, s, at::randn({8, 8}), at::randn({8, 8}), ClipLossOptions().local_loss(true).rank(2)),
               c10::ValueError);
  EXPECT_THROW(clip_loss(img, txt, s, {}, {}, {}, {}, at::zeros({4}, at::kInt)), c10::TypeError);
  EXPECT_THROW(clip_loss(img.to(at::kLong), txt.to(at::kLong), s), c10::TypeError);
}

TEST(SigLipLoss, MatchesFormulaAndGradients) {
  at::manual_seed(2);
  for (auto [batch, dim] : std::vector<std::pair<int64_t, int64_t>>{{1, 4}, {3, 3}, {8, 16}, {13, 7}}) {
    at::Tensor img = leaf(at::randn({batch, dim}, f64())), txt = leaf(at::randn({batch, dim}, f64()));
    at::Tensor scale = leaf(at::scalar_tensor(1.7, f64())), bias = leaf(at::scalar_tensor(-2.0, f64()));
    at::Tensor loss = siglip_loss(img, txt, scale, bias).contrastive_loss;
    at::Tensor ref_loss = reference_siglip(img, txt, scale, bias);
    expect_close(loss, ref_loss);
    auto ours = grads(loss, {img, txt, scale, bias});
    auto ref = grads(ref_loss, {img, txt, scale, bias});
    for (size_t i = 0; i < ours.size(); ++i) expect_close(ours[i], ref[i]);
  }
}

TEST(SigLipLoss, GatheredRanksSumToWorldTimesOneProcess) {
  at::manual_seed(3);
  const int64_t world = 4, batch = 3;
  at::Tensor all_img = at::randn({world * batch, 5}, f64()), all_txt = at::randn({world * batch, 5}, f64());
  at::Tensor scale = at::scalar_tensor(4.0, f64()), bias = at::scalar_tensor(-1.0, f64());
  at::Tensor sum = at::zeros({}, f64());
  for (int64_t r = 0; r < world; ++r) {
    at::Tensor img = all_img.narrow(0, r * batch, batch), txt = all_txt.narrow(0, r * batch, batch);
    auto out = siglip_loss(img, txt, scale, bias, all_txt, r);
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{batch, world * batch}));
    sum = sum + out.contrastive_loss;
  }
  expect_close(sum, world * reference_siglip(all_img, all_txt, scale, bias));
  // No bias: the same formula with b = 0.
  at::Tensor img = all_img.narrow(0, 0, batch), txt = all_txt.narrow(0, 0, batch);
  expect_close(siglip_loss(img, txt, scale).contrastive_loss, reference_siglip(img, txt, scale, at::zeros({}, f64())));
}

TEST(SigLipLoss, RejectsBadInput) {
  at::Tensor img = at::randn({4, 8}), txt = at::randn({4, 8}), s = at::scalar_tensor(1.0);
  EXPECT_THROW(siglip_loss(img, at::randn({4, 7}), s), c10::ValueError);
  EXPECT_THROW(siglip_loss(img, txt, s, at::ones({3})), c10::ValueError);
  EXPECT_THROW(siglip_loss(img, txt, s, {}, at::randn({10, 8})), c10::ValueError);
  EXPECT_THROW(siglip_loss(img, txt, s, {}, at::randn({8, 8}), 2), c10::ValueError);
}
