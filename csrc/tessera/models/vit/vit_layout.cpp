// ViTLayer names on the generic block.
#include "tessera/models/vit/vit_layout.h"

#include <c10/util/Exception.h>

namespace tessera::models {

nn::BlockLayout vit_layer_layout(const std::string& prefix) {
  nn::BlockLayout l;
  l.class_name = prefix + "Layer";
  l.attn = "attention";
  l.attn_layout.class_name = prefix + "Attention";
  l.attn_layout.q = "attention.query";
  l.attn_layout.k = "attention.key";
  l.attn_layout.v = "attention.value";
  l.attn_layout.o = "output.dense";
  l.attn_layout.containers = {{"attention", prefix + "SelfAttention"}, {"output", prefix + "SelfOutput"}};
  l.attn_norm = "layernorm_before";
  l.mlp_norm = "layernorm_after";
  l.fc1 = "intermediate.dense";
  l.fc2 = "output.dense";
  l.containers = {{"intermediate", prefix + "Intermediate"}, {"output", prefix + "Output"}};
  return l;
}

void check_pixel_values(const at::Tensor& px, int64_t channels, int64_t patch_size) {
  TORCH_CHECK_VALUE(px.defined() && px.dim() == 4, "pixel_values must be [B, C, H, W], got ",
                    px.defined() ? px.sizes() : at::IntArrayRef{});
  TORCH_CHECK_VALUE(px.size(1) == channels, "pixel_values has ", px.size(1), " channels, the model expects ", channels);
  TORCH_CHECK_VALUE(px.size(2) % patch_size == 0 && px.size(3) % patch_size == 0, "pixel_values of ", px.size(2),
                    "x", px.size(3), " are not a multiple of patch_size ", patch_size);
}

nn::Encoder vit_encoder(const nn::TransformerBlockOptions& block, int64_t layers, const std::string& prefix) {
  const nn::BlockLayout layout = vit_layer_layout(prefix);
  return nn::Encoder(
      layers, [block, layout](int64_t) { return nn::TransformerBlock(block, layout).ptr(); }, "layer",
      prefix + "Encoder");
}

}  // namespace tessera::models
