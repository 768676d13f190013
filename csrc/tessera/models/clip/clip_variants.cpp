// Named CLIP configurations with open_clip's model names and sizes (open_clip model_configs/
// ViT-*.json). open_clip's plain names use exact GELU; "-quickgelu" variants match OpenAI's
// released weights (and Hugging Face's openai/clip-vit-* configs).
#include "tessera/core/registry.h"

#include <nlohmann/json.hpp>

namespace tessera::models {
namespace {

struct ClipSize {
  const char* name;
  int64_t embed_dim, patch, vision_width, vision_layers, text_width, text_heads, text_layers;
};

constexpr ClipSize kSizes[] = {
    {"ViT-B-32", 512, 32, 768, 12, 512, 8, 12},
    {"ViT-B-16", 512, 16, 768, 12, 512, 8, 12},
    {"ViT-L-14", 768, 14, 1024, 24, 768, 12, 12},
};

nlohmann::json clip_config(const ClipSize& s, const char* act) {
  nlohmann::json vision = {{"hidden_size", s.vision_width},       {"intermediate_size", 4 * s.vision_width},
                           {"num_hidden_layers", s.vision_layers}, {"num_attention_heads", s.vision_width / 64},
                           {"image_size", 224},                    {"patch_size", s.patch},
                           {"hidden_act", act},                    {"model_type", "clip_vision_model"}};
  nlohmann::json text = {{"hidden_size", s.text_width},       {"intermediate_size", 4 * s.text_width},
                         {"num_hidden_layers", s.text_layers}, {"num_attention_heads", s.text_heads},
                         {"max_position_embeddings", 77},      {"vocab_size", 49408},
                         {"hidden_act", act},                  {"eos_token_id", 49407},
                         {"bos_token_id", 49406},              {"pad_token_id", 0},
                         {"model_type", "clip_text_model"}};
  return {{"architectures", {"CLIPModel"}}, {"model_type", "clip"},     {"projection_dim", s.embed_dim},
          {"logit_scale_init_value", 2.6592}, {"text_config", text}, {"vision_config", vision}};
}

const bool registered = [] {
  for (const auto& s : kSizes) {
    core::register_config({s.name, "clip", clip_config(s, "gelu").dump()});
    core::register_config({std::string(s.name) + "-quickgelu", "clip", clip_config(s, "quick_gelu").dump()});
  }
  return true;
}();

}  // namespace
}  // namespace tessera::models
