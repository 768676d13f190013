// A decoding step (one new token per sequence, against a reserved KV cache) through a pre-norm
// RMSNorm / rotary / SwiGLU layer (LLaMA's) in one pass over the layer's own buffers. The step's
// arithmetic is what the layer's modules do one op at a time (the same kernels, rounded at the same
// points, so the result is bit for bit theirs); what goes is the ~60 tensor ops around them
// (allocation, views, dispatch): ~20-35 us per layer, 2.0x a tiny model's step and 1.12x
// llama-50m's in bf16 (docs/performance.md, run 6).
#pragma once
#include "tessera/nn/layer.h"

#include <optional>

namespace tessera::nn {

class TransformerBlockImpl;

/// The layer's output for x [B, 1, dim] when the fused step applies (eval-time numerics, CPU,
/// fp32 or bf16 weights of x's dtype or int8 decoding, no unmerged LoRA, no autograd, B at most
/// ops::kDecodeRows, a cache with room), nullopt otherwise: then the layer's modules run as usual.
std::optional<at::Tensor> decode_layer(const TransformerBlockImpl& block, const at::Tensor& x, const LayerArgs& args);

/// On by default; off sends every step through the modules (how the tests compare the two).
void set_fused_decoding_enabled(bool on);
bool fused_decoding_enabled();
/// Layer steps taken by the fused path in this process (whether a model takes it at all).
int64_t fused_decoding_steps();

}  // namespace tessera::nn
