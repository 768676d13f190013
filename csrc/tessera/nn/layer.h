// What a transformer layer receives besides its hidden states, and the interface through which an
// Encoder calls its layers — in C++, or through Python's nn.Module.__call__ when a Python caller
// is installed (hooks, FSDP2 per-layer unsharding, activation-checkpoint wrappers).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace tessera::nn {

class KVCache;

/// Per-call inputs of a layer. Every tensor is optional (undefined when unused).
struct LayerArgs {
  at::Tensor mask;           ///< additive self-attention mask, broadcastable to [B, H, Q, K]
  bool causal = false;       ///< add a causal mask (bottom-right aligned: right for KV caches)
  at::Tensor position_bias;  ///< additive bias shared by all layers [B or 1, H, Q, K] (BEiT)
  at::Tensor context;        ///< cross-attention source [B, K, cross_attention_dim]
  at::Tensor context_mask;   ///< additive mask over the context, broadcastable to [B, H, Q, K]
  int64_t query_length = 0;  ///< Q-Former: the first query_length tokens are learned queries
  int64_t grid_h = 0, grid_w = 0;  ///< patch grid of the image tokens (BEiT's relative position bias)
  at::Tensor rope_cos, rope_sin;  ///< rotary tables [B or 1, Q, head_dim]
  KVCache* cache = nullptr;  ///< decoding cache; layer `layer_idx` uses its own slot
  int64_t layer_idx = 0;     ///< set by the Encoder for each layer

  /// The tensors in a fixed order (checkpointing recomputes from them; Python flattens them).
  std::vector<at::Tensor> tensors() const;
  /// A copy whose tensors are `t` (same order as tensors()).
  LayerArgs with_tensors(const std::vector<at::Tensor>& t) const;
};

/// A layer that an Encoder stacks: [B, L, D] -> [B, L, D].
class Layer {
 public:
  virtual ~Layer() = default;
  virtual at::Tensor forward_layer(const at::Tensor& x, const LayerArgs& args) = 0;
};

/// Calls layer `index` of an encoder; Python installs one to route layers through __call__.
using LayerCaller = std::function<at::Tensor(int64_t index, const at::Tensor& x, const LayerArgs& args)>;

}  // namespace tessera::nn
