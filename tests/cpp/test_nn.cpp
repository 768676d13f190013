// nn/ building blocks against plain formulas written here: attention (masks, GQA, causal with a
// KV cache), activations, RMSNorm, rotary embeddings, position-embedding resize, checkpointing.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/nn/activation.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/attention_mask.h"
#include "tessera/nn/checkpoint.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/pos_embed_resize.h"
#include "tessera/nn/rms_norm.h"
#include "tessera/nn/rotary.h"

#include <cmath>

using namespace tessera::nn;

namespace {

// softmax(q k^T * scale + mask) v, with kv heads repeated for GQA.
at::Tensor reference_attention(at::Tensor q, at::Tensor k, at::Tensor v, const at::Tensor& mask) {
  const int64_t rep = q.size(1) / k.size(1);
  k = k.repeat_interleave(rep, 1);
  v = v.repeat_interleave(rep, 1);
  at::Tensor s = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  if (mask.defined()) s = s + mask;
  return at::matmul(at::softmax(s, -1), v);
}

at::Tensor opts64() { return at::empty({0}, at::kDouble); }

}  // namespace

TEST(Attention, MatchesFormulaWithPaddingAndCausalMasks) {
  auto q = at::randn({2, 4, 5, 8}, at::kDouble), k = at::randn({2, 4, 5, 8}, at::kDouble),
       v = at::randn({2, 4, 5, 8}, at::kDouble);
  EXPECT_TRUE(at::allclose(attention(q, k, v), reference_attention(q, k, v, {}), 1e-9, 1e-9));
  at::Tensor keep = at::ones({2, 5}, at::kLong);
  keep[1][4] = 0;
  keep[1][3] = 0;
  at::Tensor pad = padding_mask(keep, at::kDouble);
  at::Tensor causal = at::full({5, 5}, -INFINITY, at::kDouble).triu(1);
  EXPECT_TRUE(at::allclose(attention(q, k, v, pad, true), reference_attention(q, k, v, pad + causal), 1e-9, 1e-9));
  EXPECT_TRUE(at::allclose(attention(q, k, v, {}, true), reference_attention(q, k, v, causal), 1e-9, 1e-9));
}

TEST(Attention, GroupedQueryHeads) {
  auto q = at::randn({1, 8, 4, 16}, at::kDouble), k = at::randn({1, 2, 4, 16}, at::kDouble),
       v = at::randn({1, 2, 4, 16}, at::kDouble);
  EXPECT_TRUE(at::allclose(attention(q, k, v), reference_attention(q, k, v, {}), 1e-9, 1e-9));
  EXPECT_THROW(attention(q, at::randn({1, 3, 4, 16}, at::kDouble), at::randn({1, 3, 4, 16}, at::kDouble)), c10::Error);
}

TEST(Attention, KVCacheDecodingEqualsFullCausalPass) {
  Attention attn(AttentionOptions(32, 4).num_kv_heads(2).out_name("o_proj"));
  attn->to(at::kDouble);
  at::Tensor x = at::randn({2, 6, 32}, at::kDouble);
  AttentionArgs full;
  full.causal = true;
  at::Tensor expected = attn(x, full);
  KVCache cache(1);
  std::vector<at::Tensor> steps;
  AttentionArgs step;
  step.causal = true;
  step.cache = &cache;
  steps.push_back(attn(x.narrow(1, 0, 3), step));  // prefill 3 tokens
  for (int64_t t = 3; t < 6; ++t) steps.push_back(attn(x.narrow(1, t, 1), step));
  EXPECT_EQ(cache.seq_len(), 6);
  EXPECT_TRUE(at::allclose(at::cat(steps, 1), expected, 1e-9, 1e-9));
  EXPECT_EQ(attn->named_parameters().contains("o_proj.weight"), true);
}

TEST(Attention, AdditiveMaskFromBool) {
  at::Tensor keep = at::tensor({1, 0}, at::kLong).to(at::kBool);
  at::Tensor m = additive_mask(keep, at::kFloat);
  EXPECT_EQ(m[0].item<float>(), 0.f);
  EXPECT_EQ(m[1].item<float>(), std::numeric_limits<float>::lowest());
}

TEST(Activations, MatchFormulas) {
  at::Tensor x = at::linspace(-4, 4, 101, at::kDouble);
  EXPECT_TRUE(at::allclose(apply_activation(x, Activation::quick_gelu), x / (1 + at::exp(-1.702 * x))));
  EXPECT_TRUE(at::allclose(apply_activation(x, Activation::gelu), 0.5 * x * (1 + at::erf(x / std::sqrt(2.0)))));
  const double c = std::sqrt(2.0 / M_PI);
  EXPECT_TRUE(at::allclose(apply_activation(x, activation_from_name("gelu_new")),
                           0.5 * x * (1 + at::tanh(c * (x + 0.044715 * x.pow(3))))));
  EXPECT_TRUE(at::allclose(apply_activation(x, Activation::silu), x / (1 + at::exp(-x))));
  EXPECT_THROW(activation_from_name("mish2"), c10::ValueError);
}

TEST(RMSNorm, MatchesFormula) {
  RMSNorm norm(8, 1e-6);
  {
    at::NoGradGuard g;
    norm->weight.uniform_();
  }
  at::Tensor x = at::randn({3, 8});
  at::Tensor expected = norm->weight * x / at::sqrt(x.pow(2).mean(-1, true) + 1e-6);
  EXPECT_TRUE(at::allclose(norm(x), expected, 1e-5, 1e-6));
}

TEST(Rotary, RotatesPairsByPositionAngle) {
  const int64_t D = 4;
  at::Tensor pos = at::arange(3, at::kLong).unsqueeze(0);
  auto [cos, sin] = rotary_tables(pos, D, 10000.0, at::kDouble);
  at::Tensor x = at::randn({1, 1, 3, D}, at::kDouble);
  at::Tensor y = apply_rotary(x, cos, sin);
  // Pair (i, i + D/2) rotates by angle p * theta^(-2i/D).
  for (int64_t p = 0; p < 3; ++p)
    for (int64_t i = 0; i < D / 2; ++i) {
      double a = p * std::pow(10000.0, -2.0 * i / D);
      double x0 = x[0][0][p][i].item<double>(), x1 = x[0][0][p][i + D / 2].item<double>();
      EXPECT_NEAR(y[0][0][p][i].item<double>(), x0 * std::cos(a) - x1 * std::sin(a), 1e-6);
      EXPECT_NEAR(y[0][0][p][i + D / 2].item<double>(), x1 * std::cos(a) + x0 * std::sin(a), 1e-6);
    }
  // Relative property: <R_p q, R_p k> is position independent for the same p.
  EXPECT_TRUE(at::allclose((y * y).sum(-1), (x * x).sum(-1), 1e-6, 1e-6));  // tables are fp32
}

TEST(PosEmbedResize, KeepsPrefixAndIsExactOnConstantGrids) {
  at::Tensor pe = at::cat({at::full({1, 1, 6}, 7.0), at::full({1, 16, 6}, 2.0)}, 1);
  at::Tensor r = pos_embed_resize(pe, 6, 6);
  EXPECT_EQ(r.sizes(), (std::vector<int64_t>{1, 37, 6}));
  EXPECT_TRUE(at::allclose(r.narrow(1, 0, 1), at::full({1, 1, 6}, 7.0)));
  EXPECT_TRUE(at::allclose(r.narrow(1, 1, 36), at::full({1, 36, 6}, 2.0), 1e-5, 1e-5));
  EXPECT_TRUE(at::equal(pos_embed_resize(pe, 4, 4), pe));
  EXPECT_THROW(pos_embed_resize(at::zeros({1, 11, 6}), 3, 3), c10::ValueError);
}

TEST(Checkpoint, SameGradientsAsPlainBackward) {
  at::Tensor w = at::randn({5, 5}, at::kDouble).requires_grad_();
  at::Tensor x1 = at::randn({3, 5}, at::kDouble).requires_grad_();
  at::Tensor x2 = x1.detach().clone().requires_grad_();
  auto fn = [&](const at::Tensor& t) { return at::tanh(at::matmul(t, w)).pow(2); };
  fn(x1).sum().backward();
  at::Tensor gw = w.grad().clone();
  w.grad().zero_();
  checkpoint(fn, x2).sum().backward();
  EXPECT_TRUE(at::allclose(x1.grad(), x2.grad()));
  EXPECT_TRUE(at::allclose(gw, w.grad()));
}
