// LlamaDecoderLayer names and options on the generic block.
#include "tessera/models/llama/llama_layout.h"

namespace tessera::models {

nn::BlockLayout llama_layer_layout() {
  nn::BlockLayout l;
  l.class_name = "LlamaDecoderLayer";
  l.attn = "self_attn";
  l.attn_layout.class_name = "LlamaAttention";
  l.attn_layout.o = "o_proj";
  l.attn_norm = "input_layernorm";
  l.mlp_norm = "post_attention_layernorm";
  l.gate = "mlp.gate_proj";
  l.fc1 = "mlp.up_proj";
  l.fc2 = "mlp.down_proj";
  l.containers = {{"mlp", "LlamaMLP"}};
  return l;
}

nn::TransformerBlockOptions llama_block_options(int64_t hidden_size, int64_t heads, int64_t kv_heads,
                                                int64_t intermediate_size, double rms_norm_eps, bool attention_bias,
                                                bool mlp_bias) {
  return nn::TransformerBlockOptions(hidden_size, heads, intermediate_size)
      .num_kv_heads(kv_heads)
      .act(nn::Activation::silu)
      .gated_mlp(true)
      .norm(nn::NormKind::rms_norm)
      .norm_eps(rms_norm_eps)
      .q_bias(attention_bias)
      .k_bias(attention_bias)
      .v_bias(attention_bias)
      .o_bias(attention_bias)
      .mlp_bias(mlp_bias);
}

}  // namespace tessera::models
