// Key/value cache for autoregressive decoding: attention layers append their new keys and values
// and read back the whole prefix (transformers' DynamicCache, one slot per layer).
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

namespace tessera::nn {

/// Grows by concatenation along the sequence axis; tensors are [batch, kv_heads, seq, head_dim].
/// Example: `auto [k, v] = cache.update(layer_idx, k_new, v_new);`
class KVCache {
 public:
  explicit KVCache(int64_t num_layers = 0) : keys_(num_layers), values_(num_layers) {}
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  /// Tokens already cached (0 before the first update).
  int64_t seq_len(int64_t layer = 0) const;
  void reset();

 private:
  std::vector<at::Tensor> keys_, values_;
};

}  // namespace tessera::nn
