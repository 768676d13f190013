// CLIPEncoderLayer names, CLIPEncoder construction and CLIP's init.
#include "tessera/models/clip/clip_layout.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::models {

nn::BlockLayout clip_layer_layout() {
  nn::BlockLayout l;
  l.class_name = "CLIPEncoderLayer";
  l.attn = "self_attn";
  l.attn_layout.class_name = "CLIPAttention";
  l.attn_layout.o = "out_proj";
  l.attn_norm = "layer_norm1";
  l.mlp_norm = "layer_norm2";
  l.fc1 = "mlp.fc1";
  l.fc2 = "mlp.fc2";
  l.containers = {{"mlp", "CLIPMLP"}};
  return l;
}

nn::Encoder clip_encoder(int64_t dim, int64_t heads, int64_t mlp_dim, const std::string& act, double eps,
                         double attention_dropout, int64_t layers) {
  auto options = nn::TransformerBlockOptions(dim, heads, mlp_dim)
                     .act(nn::activation_from_name(act))
                     .norm_eps(eps)
                     .attention_dropout(attention_dropout);
  const nn::BlockLayout layout = clip_layer_layout();
  return nn::Encoder(
      layers, [options, layout](int64_t) { return nn::TransformerBlock(options, layout).ptr(); }, "layers",
      "CLIPEncoder");
}

void init_clip_encoder(nn::EncoderImpl& encoder, int64_t dim, double factor) {
  at::NoGradGuard g;
  const double d = static_cast<double>(dim);
  const double in_std = std::pow(d, -0.5) * std::pow(2.0 * encoder.num_layers, -0.5) * factor;
  const double out_std = std::pow(d, -0.5) * factor;
  const double fc_std = std::pow(2.0 * d, -0.5) * factor;
  for (const auto& m : *encoder.layers) {
    auto* b = m->as<nn::TransformerBlockImpl>();
    const auto& attn = *b->self_attn;
    for (const nn::LinearImpl* lin : {attn.q_proj.get(), attn.k_proj.get(), attn.v_proj.get()}) lin->weight().normal_(0, in_std);
    attn.o_proj->weight().normal_(0, out_std);
    b->fc1->weight().normal_(0, fc_std);
    b->fc2->weight().normal_(0, in_std);
    for (const nn::LinearImpl* lin : std::initializer_list<const nn::LinearImpl*>{
             attn.q_proj.get(), attn.k_proj.get(), attn.v_proj.get(), attn.o_proj.get(), b->fc1.get(), b->fc2.get()})
      lin->bias().zero_();
    b->attn_norm->reset_parameters();
    b->mlp_norm->reset_parameters();
  }
}

}  // namespace tessera::models
