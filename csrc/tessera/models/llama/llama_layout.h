// LLaMA's layout of the generic transformer layer (Touvron et al. 2023; transformers'
// LlamaDecoderLayer): self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, input_layernorm and
// post_attention_layernorm (RMSNorm), no biases; the stack is `layers.N`.
#pragma once
#include "tessera/nn/transformer_block.h"

namespace tessera::models {

nn::BlockLayout llama_layer_layout();

/// Block options of a LlamaDecoderLayer: RMSNorm, SwiGLU, grouped-query attention, no biases.
nn::TransformerBlockOptions llama_block_options(int64_t hidden_size, int64_t heads, int64_t kv_heads,
                                                int64_t intermediate_size, double rms_norm_eps,
                                                bool attention_bias = false, bool mlp_bias = false);

}  // namespace tessera::models
