// Key/value cache for autoregressive decoding: attention layers append their new keys and values
// and read back the whole prefix (transformers' DynamicCache, one slot per layer). With a
// capacity (`reserve`), each layer's buffer is filled in place, so decoding does not copy the
// prefix at every step (transformers' StaticCache); the buffer starts at twice the prompt and
// doubles as it fills, up to the capacity, so a generous max_new_tokens costs memory only for the
// positions decoded (it was allocated whole: 16 GiB for a 128K-context 8B model's bf16 cache).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <utility>
#include <vector>
namespace tessera::nn {
/// Tensors are [batch, kv_heads, seq, head_dim].
/// Example: `KVCache cache(layers); cache.reserve(prompt + max_new); auto [k, v] = cache.update(i, k_new, v_new);`
class KVCache {
 public:
  explicit KVCache(int64_t num_layers = 0) : keys_(num_layers), values_(num_layers), lengths_(num_layers, 0) {}
  /// At most `capacity` positions per layer, written in place (0: grow by concatenation).
  void reserve(int64_t capacity) { capacity_ = capacity; }
  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  /// For a caller that writes the next `n` positions of `layer` itself (nn::decode_layer): the
  /// buffers [batch, heads, room, head_dim] with room for them (made as update makes them)
  /// and the positions already held. Empty (undefined buffers) without a capacity, without room
  /// for n more, or when the layer's buffers have another shape or dtype: update's turn then.
  /// `commit(layer, n)` counts the written positions.
  struct Room {
    at::Tensor keys, values;
    int64_t length = 0;
  };
  Room room(int64_t layer, int64_t n, int64_t batch, int64_t heads, int64_t head_dim, const at::TensorOptions& options);
  void commit(int64_t layer, int64_t n) { lengths_.at(layer) += n; }
  /// Tokens already cached (0 before the first update).
  int64_t seq_len(int64_t layer = 0) const;
  int64_t capacity() const { return capacity_; }
  void reset();
  /// Keeps batch rows `rows` (int64 [batch']) in that order: beam search's surviving beams.
  void reorder(const at::Tensor& rows);
 private:
  void grow_to(int64_t layer);  ///< slots up to `layer`
  /// The layer's buffers hold at least `need` positions (allocated, or grown with their prefix).
  void make_room(int64_t layer, int64_t need, int64_t batch, int64_t heads, int64_t head_dim,
                 const at::TensorOptions& options);
  static constexpr int64_t kFirstRoom = 64;
  std::vector<at::Tensor> keys_, values_;
  std::vector<int64_t> lengths_;
  int64_t capacity_ = 0;
};
}  // namespace tessera::nn
