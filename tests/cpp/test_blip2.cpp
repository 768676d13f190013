// BLIP-2 in C++: the Q-Former (with and without text input), the generation model (logits and
// greedy ids) and the retrieval model (ITC and ITM logits) reproduce the transformers fixtures.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "tessera/core/json_config.h"
#include "tessera/core/pretrained.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/blip2/blip2_model.h"
#include "test_util.h"

using namespace tessera;

namespace {

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble).reshape(a.sizes())).abs().max().item<double>();
}

}  // namespace

TEST(Blip2QFormerModel, ReproducesHuggingFaceFixtures) {
  for (const char* name : {"qformer", "qformer_text"}) {
    TESSERA_FIXTURE_DIR_OR_SKIP(dir, name);
    models::Blip2QFormerModel qformer(
        models::Blip2QFormerOptions::from_json(core::read_json_file(dir + "/config.json"), dir + "/config.json"));
    core::load_pretrained_weights(*qformer, dir);
    qformer->eval();
    auto io = core::load_safetensors(dir + "/io.safetensors");
    at::NoGradGuard no_grad;
    at::Tensor out = qformer->forward(io.at("query_embeds"), -1, {}, io.at("encoder_hidden_states")).last_hidden_state;
    EXPECT_LE(max_diff(out, io.at("last_hidden_state")), 1e-4) << name;
  }
}

TEST(Blip2ForConditionalGeneration, ReproducesHuggingFaceFixtureAndGreedyIds) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "blip2");
  models::Blip2ForConditionalGeneration blip2(
      models::Blip2Options::from_json(core::read_json_file(dir + "/config.json"), dir + "/config.json"));
  core::load_pretrained_weights(*blip2, dir);
  blip2->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  EXPECT_LE(max_diff(blip2->forward(io.at("input_ids"), io.at("pixel_values")).logits, io.at("logits")), 1e-4);
  models::GenerationOptions greedy;
  greedy.max_new_tokens = 6;
  EXPECT_TRUE(at::equal(blip2->generate(io.at("input_ids"), io.at("pixel_values"), {}, greedy), io.at("greedy")));
}

TEST(Blip2ForImageTextRetrieval, ReproducesHuggingFaceFixture) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "blip2_itr");
  models::Blip2ForImageTextRetrieval itr(
      models::Blip2Options::from_json(core::read_json_file(dir + "/config.json"), dir + "/config.json"));
  core::load_pretrained_weights(*itr, dir);
  itr->eval();
  auto io = core::load_safetensors(dir + "/io.safetensors");
  at::NoGradGuard no_grad;
  const auto& px = io.at("pixel_values");
  const auto& ids = io.at("input_ids");
  const auto& mask = io.at("attention_mask");
  EXPECT_LE(max_diff(itr->forward(px, ids, mask).logits_per_image, io.at("logits_per_image")), 1e-4);
  EXPECT_LE(max_diff(itr->forward(px, ids, mask, true).logits_per_image, io.at("itm_logits")), 1e-4);
}

TEST(Blip2QFormerModel, RefusesBadInputByName) {
  models::Blip2QFormerModel qformer(models::Blip2QFormerOptions().hidden_size(32).num_attention_heads(4)
                                        .num_hidden_layers(2).intermediate_size(48).encoder_hidden_size(24));
  tessera::testing::expect_error([&] { qformer->forward(at::randn({1, 4, 32}), -1, {}, at::randn({1, 5, 20})); },
                                 "encoder_hidden_size=24");
  tessera::testing::expect_error([&] { qformer->forward(at::randn({1, 6, 32}), 4, {}, at::randn({1, 5, 24})); },
                                 "no text input");
}

TEST(Blip2VisionModel, LoadsFromItsParentFolderByItsDeclaredRules) {
  TESSERA_FIXTURE_DIR_OR_SKIP(dir, "blip2");
  const auto config = core::read_json_file(dir + "/config.json");
  models::Blip2VisionModel tower(models::Blip2VisionOptions::from_json(config.at("vision_config"), "vision_config"));
  core::load_pretrained_weights(*tower, dir);  // the rules blip2_family.cpp declares
  models::Blip2ForConditionalGeneration blip2(models::Blip2Options::from_json(config, dir));
  core::load_pretrained_weights(*blip2, dir);
  at::NoGradGuard no_grad;
  at::Tensor px = at::randn({1, 3, 32, 32});
  EXPECT_TRUE(at::equal(tower->forward(px).last_hidden_state, blip2->vision_model->forward(px).last_hidden_state));
  // Without the alias the tower's keys are missing: a clear error, not a partial load.
  core::WeightLoading strict;
  strict.ignore_unexpected = true;
  tessera::testing::expect_error([&] { core::load_pretrained_weights(*tower, dir, strict); },
                                 "none of the module's weights are in this checkpoint");
}
