// KV cache: concatenation on the sequence dimension (dim 2), or in place in a preallocated buffer.
#include "tessera/nn/kv_cache.h"

#include <ATen/ATen.h>

namespace tessera::nn {

void KVCache::grow_to(int64_t layer) {
  if (static_cast<size_t>(layer) < keys_.size()) return;
  keys_.resize(layer + 1);
  values_.resize(layer + 1);
  lengths_.resize(layer + 1, 0);
}

std::pair<at::Tensor, at::Tensor> KVCache::update(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK_INDEX(layer >= 0, "KVCache: negative layer index ", layer);
  grow_to(layer);
  auto& ck = keys_[layer];
  auto& cv = values_[layer];
  int64_t& len = lengths_[layer];
  const int64_t n = k.size(2);
  if (capacity_ <= 0) {
    ck = ck.defined() ? at::cat({ck, k}, 2) : k;
    cv = cv.defined() ? at::cat({cv, v}, 2) : v;
    len = ck.size(2);
    return {ck, cv};
  }
  TORCH_CHECK_VALUE(len + n <= capacity_, "KVCache: ", len + n, " positions exceed the reserved capacity ", capacity_);
  if (!ck.defined()) {
    ck = at::empty({k.size(0), k.size(1), capacity_, k.size(3)}, k.options());
    cv = at::empty({v.size(0), v.size(1), capacity_, v.size(3)}, v.options());
  }
  ck.narrow(2, len, n).copy_(k);
  cv.narrow(2, len, n).copy_(v);
  len += n;
  return {ck.narrow(2, 0, len), cv.narrow(2, 0, len)};
}

KVCache::Room KVCache::room(int64_t layer, int64_t n, int64_t batch, int64_t heads, int64_t head_dim,
                            const at::TensorOptions& options) {
  if (capacity_ <= 0 || layer < 0) return {};
  grow_to(layer);
  auto& ck = keys_[layer];
  auto& cv = values_[layer];
  if (lengths_[layer] + n > capacity_) return {};
  if (!ck.defined()) {
    ck = at::empty({batch, heads, capacity_, head_dim}, options);
    cv = at::empty({batch, heads, capacity_, head_dim}, options);
  }
  const std::vector<int64_t> shape{batch, heads, capacity_, head_dim};
  if (ck.sizes() != shape || cv.sizes() != shape || ck.scalar_type() != options.dtype().toScalarType() ||
      cv.scalar_type() != ck.scalar_type() || !ck.device().is_cpu() || !ck.is_contiguous() || !cv.is_contiguous())
    return {};
  return {ck, cv, lengths_[layer]};
}

int64_t KVCache::seq_len(int64_t layer) const {
  return static_cast<size_t>(layer) < lengths_.size() ? lengths_[layer] : 0;
}

void KVCache::reset() {
  for (auto& t : keys_) t = at::Tensor();
  for (auto& t : values_) t = at::Tensor();
  std::fill(lengths_.begin(), lengths_.end(), 0);
}

void KVCache::reorder(const at::Tensor& rows) {
  for (auto* cache : {&keys_, &values_})
    for (auto& t : *cache)
      if (t.defined()) t = t.index_select(0, rows.to(t.device()));
}

}  // namespace tessera::nn
