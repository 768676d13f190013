// ViTLayer names on the generic block.
#include "tessera/models/vit/vit_layout.h"

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

nn::Encoder vit_encoder(const nn::TransformerBlockOptions& block, int64_t layers, const std::string& prefix) {
  const nn::BlockLayout layout = vit_layer_layout(prefix);
  return nn::Encoder(
      layers, [block, layout](int64_t) { return nn::TransformerBlock(block, layout).ptr(); }, "layer",
      prefix + "Encoder");
}

}  // namespace tessera::models
