// The ViT / BERT tree layout of the generic transformer layer, as transformers' ViTLayer names it
// (also ViTMAE's and BEiT's): attention.attention.{query,key,value}, attention.output.dense,
// intermediate.dense, output.dense, layernorm_before, layernorm_after; the stack is `layer.N`.
// Reference: Dosovitskiy et al. 2020; transformers/models/vit/modeling_vit.py.
#pragma once
#include "tessera/nn/encoder.h"
#include "tessera/nn/transformer_block.h"

#include <string>

namespace tessera::models {

/// `prefix` names the family's classes: "ViT" gives ViTLayer, ViTAttention, ViTSelfAttention, ...
nn::BlockLayout vit_layer_layout(const std::string& prefix = "ViT");

/// pixel_values must be [B, channels, H, W] with H and W multiples of patch_size (a clear error).
void check_pixel_values(const at::Tensor& pixel_values, int64_t channels, int64_t patch_size);

/// A ViTEncoder-style stack (`layer.N`) of pre-LN layers.
nn::Encoder vit_encoder(const nn::TransformerBlockOptions& block, int64_t layers, const std::string& prefix = "ViT");

}  // namespace tessera::models
