// CLIP's Hugging Face layout of the generic transformer layer (transformers' CLIPEncoder /
// CLIPEncoderLayer: layers.N.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2,
// layer_norm2}) and CLIP's initialisation of it.
#pragma once
#include "tessera/nn/encoder.h"
#include "tessera/nn/transformer_block.h"

#include <string>

namespace tessera::models {

nn::BlockLayout clip_layer_layout();

/// CLIPEncoder of `layers` pre-LN layers of width `dim`.
nn::Encoder clip_encoder(int64_t dim, int64_t heads, int64_t mlp_dim, const std::string& act, double eps,
                         double attention_dropout, int64_t layers);

/// transformers' CLIPPreTrainedModel._init_weights for an encoder stack (stds depend on depth).
void init_clip_encoder(nn::EncoderImpl& encoder, int64_t dim, double factor);

}  // namespace tessera::models
