// Model-level tests: CLIP reproduces the Hugging Face fixture (transformers 5.17 outputs) in
// C++, every parameter receives a gradient, and activation checkpointing leaves outputs alone.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "tessera/core/json_config.h"
#include "tessera/core/pretrained.h"
#include "tessera/core/registry.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/state_dict.h"
#include "tessera/models/beit/beit_model.h"
#include "tessera/models/blip2/blip2_options.h"
#include "tessera/models/clip/clip_model.h"
#include "tessera/models/llama/llama_generate.h"
#include "tessera/models/llava/llava_model.h"
#include "tessera/models/llava/projector.h"
#include "tessera/models/mae/mae_model.h"
#include "tessera/nn/decode_layer.h"
#include "tessera/nn/linear.h"
#include "tessera/nn/module.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

using namespace tessera;

namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble).reshape(a.sizes())).abs().max().item<double>();
}

models::ClipOptions tiny_clip() {
  models::ClipOptions o;
  o.text.vocab_size(100).hidden_size(32).intermediate_size(64).num_hidden_layers(2).num_attention_heads(4)
      .max_position_embeddings(12).eos_token_id(99);
  o.vision.hidden_size(32).intermediate_size(64).num_hidden_layers(2).num_attention_heads(4).image_size(16)
      .patch_size(8);
  o.projection_dim(16);
  return o;
}

// A one-layer LLaMA of 40 tokens in eval mode, for the generation tests.
models::LlamaForCausalLM tiny_lm() {
  models::LlamaForCausalLM lm(models::LlamaOptions().vocab_size(40).hidden_size(32).intermediate_size(48)
                                  .num_hidden_layers(1).num_attention_heads(4).num_key_value_heads(2)
                                  .max_position_embeddings(32));
  lm->eval();
  return lm;
}

}  // namespace

TEST(ClipModel, ReproducesHuggingFaceFixture) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "clip");
  models::ClipModel clip(models::ClipOptions::from_file(dir + "/config.json"));
  core::load_pretrained_weights(*clip, dir);
  clip->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  auto out = clip->forward(io.at("pixel_values"), io.at("input_ids"), io.at("attention_mask"), /*return_loss=*/true);
  EXPECT_LE(max_diff(out.image_embeds, io.at("image_embeds")), 1e-4);
  EXPECT_LE(max_diff(out.text_embeds, io.at("text_embeds")), 1e-4);
  EXPECT_LE(max_diff(out.logits_per_image, io.at("logits_per_image")), 1e-4);
  EXPECT_LE(max_diff(out.loss.reshape({1}), io.at("loss")), 1e-4);
  EXPECT_LE(max_diff(out.vision_model_output.last_hidden_state, io.at("vision_last_hidden_state")), 1e-4);
  EXPECT_LE(max_diff(out.text_model_output.last_hidden_state, io.at("text_last_hidden_state")), 1e-4);
}

TEST(ClipModel, SaveLoadRoundTripIsBitExact) {
  models::ClipModel a(tiny_clip());
  const std::string dir = tessera::testing::temp_path("clip_roundtrip");
  core::save_pretrained(*a, a->options.to_json(), dir);
  models::ClipModel b(models::ClipOptions::from_file(dir + "/config.json"));
  core::load_pretrained_weights(*b, dir);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) EXPECT_TRUE(at::equal(p.value(), pb[p.key()])) << p.key();
}

TEST(ClipModel, EveryParameterGetsAGradient) {
  models::ClipModel clip(tiny_clip());
  at::Tensor pixels = at::randn({3, 3, 16, 16});
  at::Tensor ids = at::randint(0, 98, {3, 12});
  ids.select(1, 11).fill_(99);
  auto out = clip->forward(pixels, ids, {}, /*return_loss=*/true);
  ASSERT_TRUE(at::isfinite(out.loss).item<bool>());
  out.loss.backward();
  for (const auto& p : clip->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(at::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

TEST(ClipModel, GradientCheckpointingKeepsOutputsAndGradients) {
  models::ClipModel clip(tiny_clip());
  at::Tensor pixels = at::randn({2, 3, 16, 16});
  at::Tensor ids = at::randint(0, 98, {2, 12});
  ids.select(1, 5).fill_(99);
  auto run = [&] {
    clip->zero_grad();
    auto out = clip->forward(pixels, ids, {}, true);
    out.loss.backward();
    std::vector<at::Tensor> grads;
    for (const auto& p : clip->parameters()) grads.push_back(p.grad().clone());
    return std::make_pair(out.loss.detach(), grads);
  };
  auto [loss_plain, grads_plain] = run();
  clip->set_gradient_checkpointing(true);
  auto [loss_ckpt, grads_ckpt] = run();
  EXPECT_TRUE(at::allclose(loss_plain, loss_ckpt, 0, 1e-6));
  for (size_t i = 0; i < grads_plain.size(); ++i) EXPECT_TRUE(at::allclose(grads_plain[i], grads_ckpt[i], 1e-5, 1e-6));
}

TEST(ClipModel, ClearErrorsOnBadInputs) {
  models::ClipModel clip(tiny_clip());
  at::Tensor ids = at::zeros({2, 12}, at::kLong);
  EXPECT_THROW(clip->forward(at::randn({2, 3, 15, 16}), ids), c10::Error);           // not a patch multiple
  EXPECT_THROW(clip->forward(at::randn({2, 4, 16, 16}), ids), c10::Error);           // channels
  EXPECT_THROW(clip->forward(at::randn({2, 3, 16, 16}), at::zeros({2, 13}, at::kLong)), c10::Error);  // too long
  EXPECT_THROW(clip->forward(at::randn({2, 3, 16, 16}), at::full({2, 4}, 100, at::kLong)), c10::IndexError);
  EXPECT_THROW(clip->forward(at::randn({2, 3, 16, 16}), at::zeros({2, 4})), c10::TypeError);
  EXPECT_THROW(clip->forward(at::randn({2, 3, 16, 16}), ids, at::ones({2, 11})), c10::ValueError);
}

// The shipped variant files, read at run time as Python's import does (once per test binary).
void load_shipped_configs() {
  static const bool loaded = [] {
    core::load_config_dir(std::string(TESSERA_SOURCE_DIR) + "/csrc/tessera/models");
    return true;
  }();
  (void)loaded;
}

TEST(ClipRegistry, OpenClipNamesAndSizes) {
  load_shipped_configs();
  auto names = core::list_configs();
  for (const char* n : {"ViT-B-32", "ViT-B-16", "ViT-L-14"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  auto cfg = models::ClipOptions::from_json(nlohmann::json::parse(core::find_config("ViT-B-16").json));
  EXPECT_EQ(cfg.vision.patch_size(), 16);
  EXPECT_EQ(cfg.vision.hidden_size(), 768);
  EXPECT_EQ(cfg.text.hidden_size(), 512);
  EXPECT_EQ(cfg.projection_dim(), 512);
  EXPECT_THROW(core::find_config("ViT-X-99"), c10::ValueError);
}

TEST(ClipRegistry, EveryVariantFileIsStrictlyValid) {
  load_shipped_configs();
  for (const auto& name : core::list_configs()) {
    const auto& c = core::find_config(name);
    EXPECT_NO_THROW(core::validate_config(c.family, nlohmann::json::parse(c.json), name)) << name;
  }
  auto j = nlohmann::json::parse(core::find_config("ViT-B-32").json);
  j["vision_config"]["patch_sise"] = 16;  // a typo must not pass silently
  EXPECT_THROW(core::validate_config("clip", j, "ViT-B-32"), c10::ValueError);
  EXPECT_NO_THROW(models::ClipOptions::from_json(j));  // HF configs stay lenient
}

TEST(ClipModel, ForwardIntermediatesEqualHiddenStatesAndStopEarly) {
  models::ClipModel clip(tiny_clip());
  at::Tensor pixels = at::randn({2, 3, 16, 16});
  auto all = clip->vision_model->forward(pixels, /*output_hidden_states=*/true);
  auto picked = clip->vision_model->forward_intermediates(pixels, {-2}, /*norm=*/false, /*stop_early=*/true);
  ASSERT_EQ(picked.intermediates.size(), 1u);
  EXPECT_TRUE(at::equal(picked.intermediates[0], all.hidden_states[all.hidden_states.size() - 2]));
  // Stopping early ran one layer fewer: the final state is layer L-2's output, post-normed (timm).
  EXPECT_TRUE(at::allclose(picked.last_hidden_state, clip->vision_model->post_layernorm->forward(picked.intermediates[0])));
}

TEST(ClipModel, CloneIsDeepAndEqual) {
  models::ClipModel a(tiny_clip());
  auto b = std::dynamic_pointer_cast<models::ClipModelImpl>(a->clone());
  at::Tensor pixels = at::randn({2, 3, 16, 16});
  at::Tensor ids = at::randint(0, 98, {2, 12});
  EXPECT_TRUE(at::equal(a->forward(pixels, ids).logits_per_image, b->forward(pixels, ids).logits_per_image));
  b->named_parameters()["logit_scale"].data().add_(1.0);
  EXPECT_FALSE(at::equal(a->logit_scale(), b->logit_scale()));
}

TEST(MaeForPreTraining, ReproducesHuggingFaceFixture) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "mae");
  models::MaeForPreTraining mae(models::MaeOptions::from_file(dir + "/config.json"));
  core::load_pretrained_weights(*mae, dir);
  mae->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  auto out = mae->forward(io.at("pixel_values"), io.at("noise"));
  EXPECT_LE(max_diff(out.logits, io.at("logits")), 1e-4);
  EXPECT_TRUE(at::equal(out.mask, io.at("mask")));
  EXPECT_TRUE(at::equal(out.ids_restore, io.at("ids_restore")));
  EXPECT_LE(max_diff(out.loss.reshape({1}), io.at("loss")), 1e-5);
}

TEST(MaeForPreTraining, EncoderSeesOnlyVisiblePatchesAndLossIsOnMaskedOnes) {
  models::MaeForPreTraining mae(models::MaeOptions()
                                    .hidden_size(16).num_hidden_layers(1).num_attention_heads(2).intermediate_size(32)
                                    .image_size(8).patch_size(2).decoder_hidden_size(8).decoder_num_hidden_layers(1)
                                    .decoder_num_attention_heads(2).decoder_intermediate_size(16).mask_ratio(0.75));
  at::Tensor px = at::randn({2, 3, 8, 8}), noise = at::rand({2, 16});
  auto enc = mae->vit->forward(px, noise);
  EXPECT_EQ(enc.last_hidden_state.size(1), 1 + 4);  // class token + int(16 * 0.25)
  auto out = mae->forward(px, noise);
  // The loss is the mean squared error of the masked patches only.
  at::Tensor target = mae->patchify(px);
  at::Tensor per_patch = (out.logits - target).pow(2).mean(-1);
  EXPECT_NEAR(out.loss.item<double>(), ((per_patch * out.mask).sum() / out.mask.sum()).item<double>(), 1e-6);
  EXPECT_TRUE(at::equal(mae->unpatchify(target), px));
}

TEST(MaeModel, ForwardIntermediatesRunEveryPatchUnmasked) {
  // mask_ratio 0 with increasing noise keeps every patch in place: forward's hidden states are
  // what the (unmasked) feature API computes.
  models::MaeModel mae(models::MaeOptions()
                           .hidden_size(16).num_hidden_layers(2).num_attention_heads(2).intermediate_size(32)
                           .image_size(8).patch_size(2).mask_ratio(0.0));
  mae->eval();
  at::Tensor px = at::randn({2, 3, 8, 8}), noise = at::arange(16, at::kFloat).expand({2, 16});
  at::NoGradGuard no_grad;
  auto all = mae->forward(px, noise, /*output_hidden_states=*/true);
  auto picked = mae->forward_intermediates(px, {0, -1}, /*norm=*/false);
  ASSERT_EQ(picked.intermediates.size(), 2u);
  EXPECT_TRUE(at::allclose(picked.intermediates[0], all.hidden_states[1]));
  EXPECT_TRUE(at::allclose(picked.intermediates[1], all.hidden_states[2]));
  EXPECT_TRUE(at::allclose(picked.last_hidden_state, all.last_hidden_state));
  EXPECT_TRUE(at::allclose(mae->forward_features(px), all.last_hidden_state));
}

TEST(BeitModel, ForwardIntermediatesCarryThePositionBias) {
  models::BeitModel beit(models::BeitOptions()
                             .hidden_size(16).num_hidden_layers(2).num_attention_heads(2).intermediate_size(32)
                             .image_size(8).patch_size(2).use_mean_pooling(false).use_shared_relative_position_bias(true));
  beit->eval();
  at::NoGradGuard no_grad;
  beit->shared_position_bias->table().normal_();  // zero at init: make the bias matter
  at::Tensor px = at::randn({2, 3, 8, 8});
  auto all = beit->forward(px, {}, /*output_hidden_states=*/true);
  auto picked = beit->forward_intermediates(px, {-2}, /*norm=*/true, /*stop_early=*/true);
  ASSERT_EQ(picked.intermediates.size(), 1u);
  EXPECT_TRUE(at::allclose(picked.intermediates[0], beit->layernorm->forward(all.hidden_states[1])));
  EXPECT_TRUE(at::allclose(picked.last_hidden_state, picked.intermediates[0]));  // stopped after layer 0
  EXPECT_TRUE(at::allclose(beit->forward_features(px), all.last_hidden_state));
  EXPECT_THROW(beit->forward_intermediates(px, {2}), c10::ValueError);
}

TEST(BeitForMaskedImageModeling, ReproducesHuggingFaceFixture) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "beit");
  models::BeitForMaskedImageModeling beit(models::BeitOptions::from_file(dir + "/config.json"));
  core::load_pretrained_weights(*beit, dir);
  beit->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  auto out = beit->forward(io.at("pixel_values"), io.at("bool_masked_pos"), {}, /*output_hidden_states=*/true);
  EXPECT_LE(max_diff(out.logits, io.at("logits")), 1e-4);
  EXPECT_LE(max_diff(out.hidden_states.back(), io.at("last_hidden_state")), 1e-4);
}

TEST(BeitRelativePositionBias, IndexFollowsTheBeitLayout) {
  // 2x2 grid: (2*2-1)^2 = 9 offset rows, then cls->token 9, token->cls 10, cls->cls 11.
  at::Tensor index = models::beit_relative_position_index(2, 2);
  ASSERT_EQ(index.sizes(), (at::IntArrayRef{5, 5}));
  EXPECT_EQ(index[0][0].item<int64_t>(), 11);
  EXPECT_EQ(index[0][3].item<int64_t>(), 9);
  EXPECT_EQ(index[3][0].item<int64_t>(), 10);
  EXPECT_EQ(index[1][1].item<int64_t>(), 4);  // offset (0, 0) sits in the middle of the 3x3 table
  EXPECT_EQ(index[1][4].item<int64_t>(), 0);  // patch (0,0) -> (1,1): offset (-1, -1)
  EXPECT_EQ(index[4][1].item<int64_t>(), 8);  // (1,1) -> (0,0): offset (+1, +1)
}

TEST(BeitForMaskedImageModeling, LossIsCrossEntropyOverMaskedPatches) {
  models::BeitForMaskedImageModeling beit(models::BeitOptions()
                                              .hidden_size(16).num_hidden_layers(1).num_attention_heads(2)
                                              .intermediate_size(32).image_size(8).patch_size(2).vocab_size(10)
                                              .use_mask_token(true).use_relative_position_bias(true));
  beit->eval();
  at::Tensor px = at::randn({2, 3, 8, 8}), mask = at::rand({2, 16}) < 0.5, tokens = at::randint(10, {2, 16});
  auto out = beit->forward(px, mask, tokens);
  at::Tensor logp = out.logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1);
  at::Tensor expect = -(logp * mask).sum() / mask.sum();
  EXPECT_NEAR(out.loss.item<double>(), expect.item<double>(), 1e-5);
}

TEST(LlamaForCausalLM, ReproducesHuggingFaceFixtureAndGreedyIds) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "llama");
  models::LlamaForCausalLM lm(models::LlamaOptions::from_file(dir + "/config.json"));
  core::load_pretrained_weights(*lm, dir);
  lm->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_LE(max_diff(lm->forward(io.at("input_ids")).logits, io.at("logits")), 1e-4);
  models::GenerationOptions greedy;
  greedy.max_new_tokens = 8;
  EXPECT_TRUE(at::equal(models::generate(*lm, io.at("input_ids").slice(0, 0, 1), {}, greedy), io.at("greedy")));
}

// num_return_sequences: each prompt's best beams together, best first; the best equals a plain
// beam search's answer (the rows are cut where the longest returned beam ends, so compare its
// length). More than num_beams, or several without beams, are refused.
TEST(LlamaForCausalLM, BeamSearchReturnsTheBestBeamsOfEachPrompt) {
  models::LlamaForCausalLM lm = tiny_lm();
  at::Tensor ids = at::randint(3, 40, {2, 4});
  models::GenerationOptions o;
  o.max_new_tokens = 6;
  o.num_beams = 3;
  o.eos_token_ids = std::vector<int64_t>{};
  at::Tensor best = models::generate(*lm, ids, {}, o);
  o.num_return_sequences = 3;
  at::Tensor all = models::generate(*lm, ids, {}, o);
  ASSERT_EQ(all.size(0), 6);
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(at::equal(all[b * 3].narrow(0, 0, best.size(1)), best[b])) << "prompt " << b;
    EXPECT_FALSE(at::equal(all[b * 3], all[b * 3 + 1])) << "prompt " << b;
  }
  o.num_return_sequences = 4;
  EXPECT_THROW(models::generate(*lm, ids, {}, o), c10::ValueError);
  o.num_beams = 1;
  o.num_return_sequences = 2;
  EXPECT_THROW(models::generate(*lm, ids, {}, o), c10::ValueError);
}

// A C++ caller's own hooks: a processor that bans the token greedy decoding picked, in every
// mode and in the record of scores, and a stopping criterion that ends a row after three tokens.
TEST(LlamaForCausalLM, OwnProcessorAndStoppingCriteriaRunEachStep) {
  models::LlamaForCausalLM lm = tiny_lm();
  at::Tensor ids = at::randint(3, 40, {2, 4});
  models::GenerationOptions o;
  o.max_new_tokens = 6;
  o.eos_token_ids = std::vector<int64_t>{};
  const int64_t banned = models::generate(*lm, ids, {}, o)[0][4].item<int64_t>();
  int calls = 0;
  o.logits_processor = [&](const at::Tensor&, const at::Tensor& scores) {
    ++calls;
    return scores.index_fill(1, at::tensor({banned}), -std::numeric_limits<double>::infinity());
  };
  o.record = std::make_shared<models::GenerationRecord>();
  o.record->keep_scores = true;
  for (int64_t beams : {1, 3}) {
    o.num_beams = beams;
    calls = 0;
    at::Tensor out = models::generate(*lm, ids, {}, o);
    EXPECT_FALSE(out.narrow(1, 4, out.size(1) - 4).eq(banned).any().item<bool>()) << beams << " beams";
    EXPECT_EQ(calls, static_cast<int>(o.record->scores.size()));
    EXPECT_TRUE(std::isinf(o.record->scores.front()[0][banned].item<float>()));
  }
  o.num_beams = 1;
  o.stopping_criteria = [](const at::Tensor& seq, const at::Tensor&) {
    return at::full({seq.size(0)}, seq.size(1) >= 4 + 3, at::kBool);
  };
  EXPECT_EQ(models::generate(*lm, ids, {}, o).size(1), 4 + 3);
  o.logits_processor = [](const at::Tensor&, const at::Tensor& scores) { return scores.narrow(1, 0, 5); };
  EXPECT_THROW(models::generate(*lm, ids, {}, o), c10::ValueError);
}

TEST(LlamaForCausalLM, CachedDecodingLogitsEqualAFullForward) {
  models::LlamaForCausalLM lm(models::LlamaOptions().vocab_size(50).hidden_size(32).intermediate_size(48)
                                  .num_hidden_layers(2).num_attention_heads(4).num_key_value_heads(2)
                                  .max_position_embeddings(32));
  lm->eval();
  at::NoGradGuard no_grad;
  at::Tensor ids = at::randint(50, {2, 9});
  at::Tensor full = lm->forward(ids).logits;
  for (int64_t capacity : {0, 16}) {  // grown by concatenation, and preallocated
    nn::KVCache cache(2);
    cache.reserve(capacity);
    at::Tensor prefix = lm->forward(ids.slice(1, 0, 6), {}, {}, {}, {}, false, &cache).logits;
    EXPECT_LE(max_diff(prefix, full.slice(1, 0, 6)), 1e-5);
    for (int64_t t = 6; t < 9; ++t) {
      at::Tensor step = lm->forward(ids.slice(1, t, t + 1), {}, {}, {}, {}, false, &cache).logits;
      EXPECT_LE(max_diff(step, full.slice(1, t, t + 1)), 1e-5) << "position " << t << ", capacity " << capacity;
    }
  }
}

// Under set_meta_parameters a model holds meta tensors (no memory, no init); materialised and
// initialised with init_weights, it equals a model built on the CPU from the same seed.
TEST(LlamaForCausalLM, MetaBuildThenInitEqualsACpuBuild) {
  const auto options = models::LlamaOptions().vocab_size(50).hidden_size(32).intermediate_size(48)
      .num_hidden_layers(2).num_attention_heads(4).num_key_value_heads(2).max_position_embeddings(32);
  at::manual_seed(0);
  models::LlamaForCausalLM reference(options);
  const bool previous = nn::set_meta_parameters(true);
  models::LlamaForCausalLM lm(options);
  nn::set_meta_parameters(previous);
  for (const auto& p : lm->named_parameters()) EXPECT_TRUE(p.value().is_meta()) << p.key();
  for (const auto& m : lm->modules()) {  // to_empty's part: new CPU tensors (NaN: what init misses shows)
    for (const auto& p : m->named_parameters(/*recurse=*/false))
      dynamic_cast<nn::ModuleBase&>(*m).rebind_parameter(p.key(), at::full(p.value().sizes(), NAN));
  }
  at::manual_seed(0);
  lm->init_weights();
  for (const auto& p : reference->named_parameters())
    EXPECT_TRUE(at::equal(lm->named_parameters()[p.key()], p.value())) << p.key();
}

// set_vocabulary (resize_token_embeddings) gives the model a LLaMA built at the new size computes,
// generation included; tables of another width, dtype or a tied model's head are refused by name.
TEST(LlamaForCausalLM, SetVocabularyEqualsAModelBuiltAtThatSize) {
  auto options = [](int64_t vocab) {
    return models::LlamaOptions().vocab_size(vocab).hidden_size(32).intermediate_size(48).num_hidden_layers(2)
        .num_attention_heads(4).num_key_value_heads(2).max_position_embeddings(32);
  };
  models::LlamaForCausalLM lm(options(50)), reference(options(56));
  lm->eval();
  reference->eval();
  at::NoGradGuard no_grad;
  for (const auto& p : lm->named_parameters()) {  // the reference's first 50 rows are lm's
    at::Tensor target = reference->named_parameters()[p.key()];
    if (target.sizes() == p.value().sizes()) target.copy_(p.value());
    else target.slice(0, 0, 50).copy_(p.value());
  }
  at::Tensor embed = reference->embed_tokens->weight().clone(), head = reference->lm_head->weight().clone();
  EXPECT_THROW(lm->set_vocabulary(embed.slice(1, 0, 16), head), c10::ValueError);
  EXPECT_THROW(lm->set_vocabulary(embed.to(at::kDouble), head), c10::ValueError);
  EXPECT_THROW(lm->set_vocabulary(embed, head.slice(0, 0, 55)), c10::ValueError);
  EXPECT_EQ(lm->options.vocab_size(), 50);
  lm->set_vocabulary(embed, head);
  EXPECT_EQ(lm->options.vocab_size(), 56);
  EXPECT_EQ(lm->embed_tokens->num_embeddings, 56);
  EXPECT_EQ(lm->lm_head->out_features, 56);
  at::Tensor ids = at::tensor(std::vector<int64_t>{1, 53, 7, 55}, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::equal(lm->forward(ids).logits, reference->forward(ids).logits));
  models::GenerationOptions greedy;
  greedy.max_new_tokens = 4;
  greedy.eos_token_ids = std::vector<int64_t>{54};  // a new token can stop generation
  EXPECT_TRUE(at::equal(models::generate(*lm, ids, {}, greedy), models::generate(*reference, ids, {}, greedy)));
  models::LlamaForCausalLM tied(options(50).tie_word_embeddings(true));
  EXPECT_THROW(tied->set_vocabulary(embed, head), c10::ValueError);
  tied->set_vocabulary(embed, {});
  EXPECT_EQ(tied->forward(ids).logits.size(-1), 56);
}

// nn::decode_layer runs a decoding step through a LLaMA layer in one pass; it must be what the
// layer's modules compute, bit for bit, in every case it takes (and leave the rest to them).
TEST(LlamaForCausalLM, FusedDecodingStepIsTheModulesBitForBit) {
  struct Case {
    at::ScalarType dtype;
    bool int8, bias;
    int64_t kv_heads, batch;
  };
  const Case cases[] = {{at::kFloat, false, false, 2, 1}, {at::kBFloat16, false, false, 2, 1},
                        {at::kFloat, true, false, 4, 3},  {at::kBFloat16, true, true, 1, 3},
                        {at::kBFloat16, false, true, 4, 8}, {at::kFloat, false, false, 2, 9}};
  at::NoGradGuard no_grad;
  for (const Case& c : cases) {
    at::manual_seed(0);
    models::LlamaForCausalLM lm(models::LlamaOptions().vocab_size(60).hidden_size(48).intermediate_size(80)
                                    .num_hidden_layers(2).num_attention_heads(4).num_key_value_heads(c.kv_heads)
                                    .attention_bias(c.bias).max_position_embeddings(32));
    lm->eval();
    lm->to(c.dtype);
    if (c.int8)
      for (const auto& m : lm->modules())
        if (auto* linear = dynamic_cast<nn::LinearImpl*>(m.get())) linear->set_int8_decoding(true);
    at::Tensor ids = at::randint(1, 60, {c.batch, 10});
    at::Tensor mask = at::ones_like(ids);
    if (c.batch > 1) mask.slice(0, 1, 2).slice(1, 0, 3).zero_();  // a left-padded row
    auto run = [&](bool fused) {
      nn::set_fused_decoding_enabled(fused);
      nn::KVCache cache(2);
      cache.reserve(10);
      std::vector<at::Tensor> logits{lm->forward(ids.slice(1, 0, 6), mask.slice(1, 0, 6), {}, {}, {}, false, &cache).logits};
      for (int64_t t = 6; t < 10; ++t)
        logits.push_back(lm->forward(ids.slice(1, t, t + 1), mask.slice(1, 0, t + 1), {}, {}, {}, false, &cache).logits);
      nn::set_fused_decoding_enabled(true);
      return logits;
    };
    const int64_t before = nn::fused_decoding_steps();
    const std::vector<at::Tensor> fused = run(true);
    const int64_t taken = nn::fused_decoding_steps() - before;
    const std::vector<at::Tensor> modules = run(false);
    EXPECT_EQ(nn::fused_decoding_steps() - before, taken) << "the switch did not turn the fused path off";
    // 4 steps x 2 layers, except past ops::kDecodeRows rows, where the modules' ATen ops serve.
    EXPECT_EQ(taken, c.batch <= 8 ? 8 : 0) << "batch " << c.batch;
    for (size_t i = 0; i < fused.size(); ++i)
      EXPECT_TRUE(at::equal(fused[i], modules[i])) << "step " << i << ", dtype " << c.dtype << ", int8 " << c.int8
                                                   << ", kv_heads " << c.kv_heads << ", batch " << c.batch;
  }
}

TEST(LlavaForConditionalGeneration, ReproducesHuggingFaceFixtureAndGreedyIds) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "llava");
  models::LlavaForConditionalGeneration llava(
      models::LlavaOptions::from_json(nlohmann::json::parse(std::ifstream(dir + "/config.json")), dir + "/config.json"));
  core::load_pretrained_weights(*llava, dir);
  llava->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_LE(max_diff(llava->forward(io.at("input_ids"), io.at("pixel_values")).logits, io.at("logits")), 1e-4);
  models::GenerationOptions greedy;
  greedy.max_new_tokens = 6;
  EXPECT_TRUE(at::equal(llava->generate(io.at("input_ids"), io.at("pixel_values"), {}, greedy), io.at("greedy")));
}

// A projector of another width than the language model's (its features were spliced in
// misaligned by masked_scatter), and the registry's rules: a name once, built-ins included.
struct WidthProjectorImpl : torch::nn::Module, models::Projector {
  explicit WidthProjectorImpl(int64_t width) : width(width) {}
  at::Tensor project(const at::Tensor& x) const override { return at::zeros({x.size(0), x.size(1), width}); }
  int64_t width;
};

TEST(Projector, RegisteredOnceByUsableNameAndSplicedOnlyAtTheModelsWidth) {
  models::register_projector("test_width_35", [](const models::ProjectorSpec&) {
    return std::make_shared<WidthProjectorImpl>(35);
  });
  const auto again = [](const std::string& name) {
    models::register_projector(name, [](const models::ProjectorSpec& s) {
      return std::make_shared<WidthProjectorImpl>(s.out_dim);
    });
  };
  EXPECT_THROW(again("test_width_35"), c10::ValueError);
  EXPECT_THROW(again("linear"), c10::ValueError);  // a built-in is not replaced
  for (const char* name : {"", " a", "has space", "a/b", "x\n"}) EXPECT_THROW(again(name), c10::ValueError) << name;
  EXPECT_THROW(models::register_projector("test_null", nullptr), c10::ValueError);
  nlohmann::json config = {{"text_config", {{"vocab_size", 100}, {"hidden_size", 32}, {"intermediate_size", 40},
                                            {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                                            {"max_position_embeddings", 64}}},
                           {"vision_config", {{"hidden_size", 24}, {"intermediate_size", 48}, {"num_hidden_layers", 1},
                                              {"num_attention_heads", 2}, {"image_size", 16}, {"patch_size", 8}}},
                           {"image_token_index", 90}, {"vision_feature_layer", -1},
                           {"projector_type", "test_width_35"}};
  models::LlavaForConditionalGeneration llava(models::LlavaOptions::from_json(config, "test"));
  at::Tensor ids = at::full({1, 6}, 5, at::kLong);
  ids.narrow(1, 1, 4).fill_(90);
  EXPECT_THROW(llava->forward(ids, at::randn({1, 3, 16, 16})), c10::ValueError);
}

// Config field tables (core/config_fields.h): the FIELD rows are what visit_fields reads and
// writes, every declared field has a meaning, and every key to_json writes is declared.
#define TESSERA_TEST_FIELD_KEY(type, name, ...) #name,
#define TESSERA_TEST_NOT_FIELD(...)
#define TESSERA_TEST_FIELD_KEYS(TABLE) \
  std::vector<std::string> { TABLE(TESSERA_TEST_FIELD_KEY, TESSERA_TEST_NOT_FIELD, TESSERA_TEST_NOT_FIELD) }

template <class O>
void expect_declared_once(const std::string& name, const std::vector<std::string>& field_rows) {
  SCOPED_TRACE(name);
  EXPECT_EQ(core::field_names<O>(), field_rows);
  std::set<std::string> declared;
  for (const auto& doc : core::field_docs<O>()) {
    EXPECT_FALSE(doc.meaning.empty()) << doc.key;
    EXPECT_TRUE(declared.insert(doc.key).second) << doc.key << " is declared twice";
  }
  // Keys the config writes besides its fields: type tags and values derived from other fields.
  const std::set<std::string> derived = {"model_type", "architectures", "image_seq_length", "tie_word_embeddings",
                                         "use_decoder_only_language_model"};
  const nlohmann::json written = O{}.to_json();
  for (const auto& item : written.items())
    EXPECT_TRUE(declared.count(item.key()) || derived.count(item.key())) << item.key() << " is written, not declared";
  EXPECT_NO_THROW(O::from_json(written, name, /*strict=*/true));  // the hand-read keys are accepted too
}

TEST(ConfigFields, EveryOptionsFieldIsDeclaredOnceWithAMeaning) {
  using namespace models;
  expect_declared_once<ClipVisionOptions>("clip vision", TESSERA_TEST_FIELD_KEYS(TESSERA_CLIP_VISION_OPTIONS));
  expect_declared_once<ClipTextOptions>("clip text", TESSERA_TEST_FIELD_KEYS(TESSERA_CLIP_TEXT_OPTIONS));
  expect_declared_once<ClipOptions>("clip", TESSERA_TEST_FIELD_KEYS(TESSERA_CLIP_OPTIONS));
  expect_declared_once<MaeOptions>("mae", TESSERA_TEST_FIELD_KEYS(TESSERA_MAE_OPTIONS));
  expect_declared_once<BeitOptions>("beit", TESSERA_TEST_FIELD_KEYS(TESSERA_BEIT_OPTIONS));
  expect_declared_once<LlamaOptions>("llama", TESSERA_TEST_FIELD_KEYS(TESSERA_LLAMA_OPTIONS));
  expect_declared_once<LlavaOptions>("llava", TESSERA_TEST_FIELD_KEYS(TESSERA_LLAVA_OPTIONS));
  expect_declared_once<Blip2VisionOptions>("blip2 vision", TESSERA_TEST_FIELD_KEYS(TESSERA_BLIP2_VISION_OPTIONS));
  expect_declared_once<Blip2QFormerOptions>("blip2 qformer", TESSERA_TEST_FIELD_KEYS(TESSERA_BLIP2_QFORMER_OPTIONS));
  expect_declared_once<Blip2Options>("blip2", TESSERA_TEST_FIELD_KEYS(TESSERA_BLIP2_OPTIONS));
}

TEST(ConfigFields, DocsCarryTheDefaultsAsTheConfigFileHoldsThem) {
  const auto docs = core::field_docs<models::LlavaOptions>();
  const auto at = [&](const std::string& key) {
    for (const auto& d : docs)
      if (d.key == key) return d;
    ADD_FAILURE() << key << " not documented";
    return core::FieldDoc{};
  };
  EXPECT_EQ(at("image_token_index").default_value, 32000);
  EXPECT_EQ(at("vision_feature_layer").default_value, -2);            // to_json writes one layer as a number
  EXPECT_EQ(at("projector_config").default_value, "{}");              // to_json leaves it out: the member
  EXPECT_EQ(at("text_config.num_key_value_heads").default_value, 32);  // a sub-config's field, as written
  EXPECT_EQ(at("vision_config.patch_size").default_value, 32);
  EXPECT_EQ(at("text_config.eos_token_id").default_value, 2);
  EXPECT_TRUE(at("text_config").default_value.is_object());
}

// The weight-loading rules each family declares (weight_loading.h), applied by the C++ loader
// itself: a part from its parent's folder, a base model from its task model's, another layout.
namespace {
void expect_same_parameters(torch::nn::Module& loaded, torch::nn::Module& reference) {
  auto want = reference.named_parameters();
  ASSERT_EQ(loaded.named_parameters().size(), want.size());
  for (const auto& p : loaded.named_parameters()) EXPECT_TRUE(at::equal(p.value(), want[p.key()])) << p.key();
}
}  // namespace

TEST(WeightLoading, ClipTowersLoadFromTheClipFolder) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "clip");
  const auto config = core::read_json_file(dir + "/config.json");
  models::ClipModel clip(models::ClipOptions::from_json(config));
  core::load_pretrained_weights(*clip, dir);
  models::ClipVisionTransformer vision(models::ClipVisionOptions::from_json(config.at("vision_config")));
  models::ClipTextTransformer text(models::ClipTextOptions::from_json(config.at("text_config")));
  core::load_pretrained_weights(*vision, dir);
  core::load_pretrained_weights(*text, dir);
  expect_same_parameters(*vision, *clip->vision_model);
  expect_same_parameters(*text, *clip->text_model);
  // Without the parent's config.json the folder cannot be read as the parent's: the error says so.
  const std::string bare = tessera::testing::temp_path("clip_weights_only");
  std::filesystem::create_directories(bare);
  std::filesystem::copy_file(dir + "/model.safetensors", bare + "/model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  tessera::testing::expect_error([&] { core::load_pretrained_weights(*vision, bare); },
                                 "no config.json: a part loads from its parent's folder through the 'vision_config'");
}

TEST(WeightLoading, BaseModelsLoadFromTheirPretrainingCheckpoints) {
  TESSERA_FIXTURE_DIR_OR_SKIP(mae_dir, "mae");
  models::MaeForPreTraining mae(models::MaeOptions::from_file(mae_dir + "/config.json"));
  models::MaeModel vit(models::MaeOptions::from_file(mae_dir + "/config.json"));
  core::load_pretrained_weights(*mae, mae_dir);
  struct Said : c10::WarningHandler {
    std::string text;
    void process(const c10::Warning& w) override { text += w.msg(); }
  } said;
  {
    c10::WarningUtils::WarningHandlerGuard guard(&said);
    core::load_pretrained_weights(*vit, mae_dir);  // the `vit.*` part; the decoder is left out, said
  }
  EXPECT_NE(said.text.find("its decoder weights are not used (a task head)"), std::string::npos) << said.text;
  expect_same_parameters(*vit, *mae->vit);
  TESSERA_FIXTURE_DIR_OR_SKIP(beit_dir, "beit");
  models::BeitForMaskedImageModeling mim(models::BeitOptions::from_file(beit_dir + "/config.json"));
  models::BeitModel beit(models::BeitOptions::from_file(beit_dir + "/config.json"), /*add_pooling_layer=*/false);
  core::load_pretrained_weights(*mim, beit_dir);
  core::load_pretrained_weights(*beit, beit_dir);
  expect_same_parameters(*beit, *mim->beit);
}

TEST(WeightLoading, LlavaReadsTransformersCurrentLayout) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "llava");
  const auto config = core::read_json_file(dir + "/config.json");
  models::LlavaForConditionalGeneration reference(models::LlavaOptions::from_json(config, dir));
  core::load_pretrained_weights(*reference, dir);
  const std::vector<std::pair<std::string, std::string>> renames{
      {"language_model.model.", "model.language_model."},
      {"language_model.lm_head.", "lm_head."},
      {"vision_tower.", "model.vision_tower."},
      {"multi_modal_projector.", "model.multi_modal_projector."}};
  core::TensorDict moved;
  for (const auto& [key, value] : core::state_dict(*reference)) {
    std::string name = key;
    for (const auto& [from, to] : renames) {
      if (key.rfind(from, 0) == 0) name = to + key.substr(from.size());
    }
    moved[name] = value;
  }
  const std::string folder = tessera::testing::temp_path("llava_current_layout");
  std::filesystem::create_directories(folder);
  core::save_safetensors(folder + "/model.safetensors", moved, {{"format", "pt"}});
  core::write_json_file(folder + "/config.json", config);
  models::LlavaForConditionalGeneration llava(models::LlavaOptions::from_json(config, folder));
  core::load_pretrained_weights(*llava, folder);
  expect_same_parameters(*llava, *reference);
}
