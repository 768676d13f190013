// nn/ building blocks against plain formulas written here: attention (masks, GQA, causal with a
// KV cache), activations, RMSNorm, rotary embeddings, position-embedding resize, checkpointing.
#include <ATen/ATen.h>
#include <ATen/cpu/Utils.h>
#include <gtest/gtest.h>

#include "tessera/nn/activation.h"
#include "tessera/nn/attention.h"
#include "tessera/nn/attention_mask.h"
#include "tessera/nn/attention_precision.h"
#include "tessera/nn/checkpoint.h"
#include "tessera/nn/kv_cache.h"
#include "tessera/nn/pos_embed_resize.h"
#include "tessera/nn/norm.h"
#include "tessera/nn/encoder.h"
#include "tessera/nn/transformer_block.h"
#include "tessera/nn/rotary.h"
#include "tessera/nn/step_attention_backend.h"
#include "test_util.h"

#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <map>
#include <thread>

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
  AttentionLayout layout;
  layout.o = "o_proj";
  Attention attn(AttentionOptions(32, 4).num_kv_heads(2), layout);
  attn->to(at::kDouble);
  at::Tensor x = at::randn({2, 6, 32}, at::kDouble);
  LayerArgs full;
  full.causal = true;
  at::Tensor expected = attn->forward(x, {}, full);
  KVCache cache(1);
  std::vector<at::Tensor> steps;
  LayerArgs step;
  step.causal = true;
  step.cache = &cache;
  steps.push_back(attn->forward(x.narrow(1, 0, 3), {}, step));  // prefill 3 tokens
  for (int64_t t = 3; t < 6; ++t) steps.push_back(attn->forward(x.narrow(1, t, 1), {}, step));
  EXPECT_EQ(cache.seq_len(), 6);
  EXPECT_TRUE(at::allclose(at::cat(steps, 1), expected, 1e-9, 1e-9));
  EXPECT_EQ(attn->named_parameters().contains("o_proj.weight"), true);
}

TEST(KVCache, GrowsAsItFillsUpToItsCapacityKeepingThePrefix) {
  // A generous capacity (max_new_tokens) costs memory only for the positions written.
  KVCache cache(1);
  cache.reserve(100000);
  at::Tensor k = at::randn({2, 3, 5, 4}), v = at::randn({2, 3, 5, 4});
  auto [k1, v1] = cache.update(0, k, v);
  EXPECT_TRUE(at::equal(k1, k) && at::equal(v1, v));
  std::vector<at::Tensor> keys{k}, values{v};
  for (int step = 0; step < 300; ++step) {  // through several doublings
    keys.push_back(at::randn({2, 3, 1, 4}));
    values.push_back(at::randn({2, 3, 1, 4}));
    std::tie(k1, v1) = cache.update(0, keys.back(), values.back());
  }
  EXPECT_TRUE(at::equal(k1, at::cat(keys, 2)) && at::equal(v1, at::cat(values, 2)));
  KVCache::Room room = cache.room(0, 1, 2, 3, 4, k.options());
  ASSERT_TRUE(room.keys.defined());
  EXPECT_EQ(room.length, 305);
  EXPECT_GE(room.keys.size(2), 306);
  EXPECT_LE(room.keys.size(2), 2 * 306);  // not the 100000 reserved
  KVCache tight(1);
  tight.reserve(6);
  tight.update(0, k, v);
  EXPECT_EQ(tight.room(0, 1, 2, 3, 4, k.options()).keys.size(2), 6);  // never past the capacity
  EXPECT_FALSE(tight.room(0, 2, 2, 3, 4, k.options()).keys.defined());
  EXPECT_THROW(tight.update(0, at::randn({2, 3, 2, 4}), at::randn({2, 3, 2, 4})), c10::Error);
}

TEST(Attention, AdditiveMaskFromBool) {
  at::Tensor keep = at::tensor({1, 0}, at::kLong).to(at::kBool);
  at::Tensor m = additive_mask(keep, at::kFloat);
  EXPECT_EQ(m[0].item<float>(), 0.f);
  EXPECT_EQ(m[1].item<float>(), std::numeric_limits<float>::lowest());
}

TEST(Attention, ShortReducedPrecisionTrainingCallsComputeInFp32) {
  const auto caps = at::cpu::get_cpu_capabilities();
  const auto has = [&](const char* f) { return caps.count(f) && caps.at(f).isBool() && caps.at(f).toBool(); };
  if (has("amx_bf16")) GTEST_SKIP() << "bf16 has a matrix unit here: the rule is off";
  auto qkv = [](int64_t keys, at::ScalarType t, bool grad) {
    std::vector<at::Tensor> r{at::randn({1, 2, 4, 8}).to(t), at::randn({1, 2, keys, 8}).to(t),
                              at::randn({1, 2, keys, 8}).to(t)};
    for (auto& x : r) x.requires_grad_(grad);
    return r;
  };
  auto runs = [](const std::vector<at::Tensor>& t, double dropout = 0) {
    return fp32_attention_rounds_to(t[0], t[1], t[2], dropout).has_value();
  };
  EXPECT_TRUE(runs(qkv(kShortKeys, at::kBFloat16, true)));
  EXPECT_FALSE(runs(qkv(kShortKeys + 1, at::kBFloat16, true))) << "long keys: the bf16 kernel is faster";
  EXPECT_FALSE(runs(qkv(16, at::kBFloat16, false))) << "no backward: the bf16 forward is faster";
  EXPECT_FALSE(runs(qkv(16, at::kBFloat16, true), 0.1)) << "dropout keeps its kernel and random stream";
  EXPECT_FALSE(runs(qkv(16, at::kFloat, true)));
  {
    at::NoGradGuard no_grad;
    EXPECT_FALSE(runs(qkv(16, at::kBFloat16, true)));
    ForwardForBackward checkpoint_first_pass;
    EXPECT_TRUE(runs(qkv(16, at::kBFloat16, false)));
  }
  EXPECT_FALSE(runs(qkv(16, at::kBFloat16, false))) << "the guard ended";
  if (!has("amx_fp16") && !has("avx512_fp16")) EXPECT_TRUE(runs(qkv(1000, at::kHalf, false)));
  set_cpu_attention_in_fp32(false);
  EXPECT_FALSE(runs(qkv(16, at::kBFloat16, true)));
  set_cpu_attention_in_fp32(true);
}

TEST(Attention, DecodingStepsLeaveCudnnOutAndRestoreTheUsersSetting) {
  auto& ctx = at::globalContext();
  const bool before = ctx.userEnabledCuDNNSDP();
  // Only CUDA steps take the rule (CUDA's own check is tests/python/test_cuda.py).
  at::NoGradGuard no_grad;
  EXPECT_FALSE(step_avoids_cudnn_attention(at::zeros({1, 2, 1, 4}), at::zeros({1, 2, 9, 4})));
  for (bool user : {true, false}) {
    ctx.setSDPUseCuDNN(user);
    {
      NoCudnnAttention outer;
      EXPECT_FALSE(ctx.userEnabledCuDNNSDP());
      {
        NoCudnnAttention inner;
        EXPECT_FALSE(ctx.userEnabledCuDNNSDP());
      }
      EXPECT_FALSE(ctx.userEnabledCuDNNSDP()) << "the inner guard ended while the outer one lives";
    }
    EXPECT_EQ(ctx.userEnabledCuDNNSDP(), user);
    // Overlapping steps on several threads, ending in any order: the setting comes back once.
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&ctx] {
        for (int i = 0; i < 200; ++i) {
          NoCudnnAttention step;
          EXPECT_FALSE(ctx.userEnabledCuDNNSDP());
        }
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ctx.userEnabledCuDNNSDP(), user);
  }
  ctx.setSDPUseCuDNN(before);
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

TEST(Norm, RmsNormMatchesFormula) {
  Norm norm(8, NormKind::rms_norm, 1e-6);
  {
    at::NoGradGuard g;
    norm->weight().uniform_();
  }
  at::Tensor x = at::randn({3, 8});
  at::Tensor expected = norm->weight() * x / at::sqrt(x.pow(2).mean(-1, true) + 1e-6);
  EXPECT_TRUE(at::allclose(norm(x), expected, 1e-5, 1e-6));
  EXPECT_FALSE(norm->named_parameters().contains("bias"));
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
  checkpoint([&](const std::vector<at::Tensor>& t) { return fn(t[0]); }, {x2}).sum().backward();
  EXPECT_TRUE(at::allclose(x1.grad(), x2.grad()));
  EXPECT_TRUE(at::allclose(gw, w.grad()));
}

TEST(Checkpoint, EveryDifferentiableInputAndDropoutReplay) {
  at::Tensor a1 = at::randn({4, 6}, at::kDouble).requires_grad_(), b1 = at::randn({6}, at::kDouble).requires_grad_();
  at::Tensor a2 = a1.detach().clone().requires_grad_(), b2 = b1.detach().clone().requires_grad_();
  auto fn = [](const at::Tensor& a, const at::Tensor& b) { return at::dropout(at::sin(a + b), 0.5, true).pow(2); };
  at::manual_seed(7);
  fn(a1, b1).sum().backward();
  at::manual_seed(7);
  at::Tensor y = checkpoint([&](const std::vector<at::Tensor>& t) { return fn(t[0], t[2]); }, {a2, at::Tensor(), b2});
  at::randn({100});  // the RNG moves on before backward; the recomputation must not see it
  y.sum().backward();
  EXPECT_TRUE(at::allclose(a1.grad(), a2.grad()));
  EXPECT_TRUE(at::allclose(b1.grad(), b2.grad()));
}

TEST(Checkpoint, ParametersGetGradientsWhenNoInputNeedsOne) {
  // Frozen embeddings or LoRA on a frozen base: the reentrant checkpoint joined the graph only
  // through its inputs, so w got no gradient (silently) unless told fn has trainable parameters.
  at::Tensor w = at::randn({5, 5}, at::kDouble).requires_grad_();
  at::Tensor x = at::randn({3, 5}, at::kDouble);
  auto fn = [&](const std::vector<at::Tensor>& t) { return at::tanh(at::matmul(t[0], w)).pow(2); };
  fn({x}).sum().backward();
  at::Tensor plain = w.grad().clone();
  w.grad().zero_();
  checkpoint(fn, {x}, /*parameters_need_grad=*/true).sum().backward();
  EXPECT_TRUE(at::allclose(plain, w.grad()));
  EXPECT_FALSE(checkpoint(fn, {x}).requires_grad());  // not told: no graph, as before
}

TEST(Checkpoint, AnUndefinedFirstInputStillLetsParametersLearn) {
  at::Tensor w = at::randn({5, 5}, at::kDouble).requires_grad_();
  const at::Tensor x = at::randn({3, 5}, at::kDouble);
  auto fn = [&](const std::vector<at::Tensor>& t) { return at::tanh(at::matmul(t[1], w)).pow(2); };
  checkpoint(fn, {at::Tensor(), x}, /*parameters_need_grad=*/true).sum().backward();  // was "no device"
  at::Tensor got = w.grad().clone();
  w.grad().zero_();
  fn({at::Tensor(), x}).sum().backward();
  EXPECT_TRUE(at::allclose(got, w.grad()));
}

TEST(Checkpoint, AFailedRecomputationPutsTheRandomStateBack) {
  // A caught error in backward (an OOM in the recomputation) left the generator rewound to the
  // forward's state: the next draws repeated earlier ones.
  bool fail = false;
  at::Tensor x = at::randn({4}, at::kDouble).requires_grad_();
  at::manual_seed(0);
  at::Tensor y = checkpoint([&](const std::vector<at::Tensor>& t) {
    TORCH_CHECK(!fail, "recomputation failed");
    return t[0] * 2;
  }, {x});
  const at::Tensor drawn = at::rand({3});  // from the state the forward captured
  fail = true;
  EXPECT_THROW(y.sum().backward(), std::exception);
  EXPECT_FALSE(at::equal(at::rand({3}), drawn));
}

TEST(Checkpoint, AutogradGradIsRefusedNotAnsweredWithoutTheLayer) {
  // The nested backward cannot reach autograd.grad()'s outputs: they came back undefined while
  // .grad was written. torch's reentrant checkpoint refuses it the same way.
  at::Tensor w = at::randn({5, 5}, at::kDouble).requires_grad_();
  at::Tensor x = at::randn({3, 5}, at::kDouble).requires_grad_();
  at::Tensor y = checkpoint([&](const std::vector<at::Tensor>& t) { return at::matmul(t[0], w); }, {x}).sum();
  // x's gradient passes through the checkpoint; w's would come from its nested backward.
  tessera::testing::expect_error([&] { torch::autograd::grad({y}, {w, x}, {}, std::nullopt, false, true); },
                                 "does not work with torch.autograd.grad()");
  EXPECT_FALSE(w.grad().defined());
}

namespace {
// Sum of squares of every parameter's gradient, by name.
std::map<std::string, at::Tensor> grads_of(torch::nn::Module& m) {
  std::map<std::string, at::Tensor> g;
  for (const auto& p : m.named_parameters()) g[p.key()] = p->grad().defined() ? p->grad().clone() : at::Tensor();
  return g;
}
}  // namespace

TEST(Encoder, CheckpointingWithDropoutGivesTheSameGradients) {
  auto opts = TransformerBlockOptions(16, 4, 32).attention_dropout(0.3).hidden_dropout(0.2).drop_path(0.1);
  Encoder enc(2, [&](int64_t) { return TransformerBlock(opts).ptr(); });
  enc->to(at::kDouble);
  enc->train();
  at::Tensor x = at::randn({2, 5, 16}, at::kDouble);
  LayerArgs args;
  args.position_bias = at::randn({1, 4, 5, 5}, at::kDouble).requires_grad_();
  at::manual_seed(3);
  enc->forward(x, args).last_hidden_state.pow(2).sum().backward();
  auto plain = grads_of(*enc);
  at::Tensor bias_grad = args.position_bias.grad().clone();
  enc->zero_grad();
  args.position_bias.grad().zero_();
  enc->gradient_checkpointing = true;
  at::manual_seed(3);
  enc->forward(x, args).last_hidden_state.pow(2).sum().backward();
  for (const auto& [k, g] : grads_of(*enc)) {
    ASSERT_TRUE(g.defined()) << k;
    EXPECT_TRUE(at::allclose(g, plain[k], 1e-10, 1e-10)) << k;
  }
  EXPECT_TRUE(at::allclose(args.position_bias.grad(), bias_grad, 1e-10, 1e-10));
}

TEST(Encoder, CheckpointedLayersLearnFromInputsThatNeedNoGradient) {
  Encoder enc(2, [](int64_t) { return TransformerBlock(TransformerBlockOptions(16, 4, 32)).ptr(); });
  enc->to(at::kDouble);
  enc->train();
  const at::Tensor x = at::randn({2, 5, 16}, at::kDouble);  // frozen embeddings' output
  enc->forward(x, {}).last_hidden_state.pow(2).sum().backward();
  auto plain = grads_of(*enc);
  enc->zero_grad();
  enc->gradient_checkpointing = true;
  enc->forward(x, {}).last_hidden_state.pow(2).sum().backward();
  for (const auto& [k, g] : grads_of(*enc)) {
    ASSERT_TRUE(g.defined()) << k;
    EXPECT_TRUE(at::allclose(g, plain[k], 1e-10, 1e-10)) << k;
  }
}

TEST(Encoder, ABackwardOutlivesTheCheckpointedEncoder) {
  // The recomputation held a raw pointer to each layer: a loss made by a temporary model (a
  // deepcopy) crashed in backward once the model was freed.
  at::Tensor loss;
  std::map<std::string, at::Tensor> weights;
  {
    Encoder enc(2, [](int64_t) { return TransformerBlock(TransformerBlockOptions(16, 4, 32)).ptr(); });
    enc->to(at::kDouble);
    enc->train();
    enc->gradient_checkpointing = true;
    for (const auto& p : enc->named_parameters()) weights[p.key()] = p.value();
    loss = enc->forward(at::randn({2, 5, 16}, at::kDouble), {}).last_hidden_state.pow(2).sum();
  }
  loss.backward();
  for (const auto& [k, w] : weights) EXPECT_TRUE(w.grad().defined()) << k;
}

TEST(Encoder, StopsEarlyAndPicksIntermediates) {
  Encoder enc(4, [](int64_t) { return TransformerBlock(TransformerBlockOptions(8, 2, 16)).ptr(); });
  at::Tensor x = at::randn({1, 3, 8});
  auto all = enc->forward(x, {}, /*output_hidden_states=*/true);
  int calls = 0;
  enc->set_layer_caller([&](int64_t i, const at::Tensor& h, const LayerArgs& a) {
    EXPECT_EQ(a.layer_idx, i);  // each layer sees its own index (its KV-cache slot)
    ++calls;
    return enc->run_layer(i, h, a);
  });
  auto [last, picked] = enc->forward_intermediates(x, {-3, 1}, {}, /*stop_early=*/true);
  EXPECT_EQ(calls, 2);  // layers 0 and 1 only
  ASSERT_EQ(picked.size(), 2u);
  EXPECT_TRUE(at::allclose(picked[0], all.hidden_states[2]));
  EXPECT_TRUE(at::allclose(picked[1], all.hidden_states[2]));
  EXPECT_THROW(enc->forward_intermediates(x, {4}), c10::ValueError);
  EXPECT_EQ(last_layers(3, 2), (std::vector<int64_t>{1, 2}));
  EXPECT_THROW(last_layers(3, 4), c10::ValueError);
}

TEST(Module, ParametersAreReadAtCallTime) {
  Linear lin(3, 2);
  at::Tensor x = at::randn({4, 3});
  at::Tensor w = at::randn({2, 3}), b = at::zeros({2});
  lin->rebind_parameter("weight", w);
  lin->rebind_parameter("bias", b);
  EXPECT_TRUE(at::allclose(lin(x), at::matmul(x, w.t())));
  EXPECT_TRUE(lin->named_parameters()["weight"].is_same(w));
  EXPECT_THROW(lin->rebind_parameter("weight", at::randn({3, 3})), c10::ValueError);
  EXPECT_THROW(lin->rebind_parameter("scale", w), c10::ValueError);
}

TEST(Module, CloneCopiesEveryTensorOfALayoutTree) {
  TransformerBlock a(TransformerBlockOptions(8, 2, 16).layer_scale_init(0.1));
  auto b = std::dynamic_pointer_cast<TransformerBlockImpl>(a->clone());
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    EXPECT_TRUE(at::equal(*p, pb[p.key()])) << p.key();
    EXPECT_NE(p->data_ptr(), pb[p.key()].data_ptr()) << p.key();
  }
  at::Tensor x = at::randn({1, 3, 8});
  EXPECT_TRUE(at::allclose(a->forward(x), b->forward(x)));
}
