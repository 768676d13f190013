// KV cache: concatenation on the sequence dimension (dim 2), or in place in a preallocated buffer.
#include "tessera/nn/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

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
  make_room(layer, len + n, k.size(0), k.size(1), k.size(3), k.options());
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
  const auto fits = [&](const at::Tensor& t) {
    return t.dim() == 4 && t.size(0) == batch && t.size(1) == heads && t.size(3) == head_dim &&
           t.scalar_type() == options.dtype().toScalarType() && t.device().is_cpu() && t.is_contiguous();
  };
  if (ck.defined() && (!fits(ck) || !fits(cv))) return {};
  make_room(layer, lengths_[layer] + n, batch, heads, head_dim, options);
  if (!fits(ck) || !fits(cv)) return {};
  return {ck, cv, lengths_[layer]};
}

void KVCache::make_room(int64_t layer, int64_t need, int64_t batch, int64_t heads, int64_t head_dim,
                        const at::TensorOptions& options) {
  auto& ck = keys_[layer];
  auto& cv = values_[layer];
  const int64_t held = ck.defined() ? ck.size(2) : 0;
  if (need <= held) return;
  const int64_t size = std::min(capacity_, std::max({need, 2 * held, 2 * need, kFirstRoom}));
  at::Tensor k = at::empty({batch, heads, size, head_dim}, options);
  at::Tensor v = at::empty({batch, heads, size, head_dim}, options);
  const int64_t len = lengths_[layer];
  if (len > 0) {
    k.narrow(2, 0, len).copy_(ck.narrow(2, 0, len));
    v.narrow(2, 0, len).copy_(cv.narrow(2, 0, len));
  }
  ck = std::move(k);
  cv = std::move(v);
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
