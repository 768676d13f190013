// Dynamic KV cache: concatenate on the sequence dimension (dim 2).
#include "tessera/nn/kv_cache.h"

#include <ATen/ATen.h>

namespace tessera::nn {

std::pair<at::Tensor, at::Tensor> KVCache::update(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK_INDEX(layer >= 0, "KVCache: negative layer index ", layer);
  if (static_cast<size_t>(layer) >= keys_.size()) {
    keys_.resize(layer + 1);
    values_.resize(layer + 1);
  }
  auto& ck = keys_[layer];
  auto& cv = values_[layer];
  ck = ck.defined() ? at::cat({ck, k}, 2) : k;
  cv = cv.defined() ? at::cat({cv, v}, 2) : v;
  return {ck, cv};
}

int64_t KVCache::seq_len(int64_t layer) const {
  if (static_cast<size_t>(layer) >= keys_.size() || !keys_[layer].defined()) return 0;
  return keys_[layer].size(2);
}

void KVCache::reset() {
  for (auto& t : keys_) t = at::Tensor();
  for (auto& t : values_) t = at::Tensor();
}

}  // namespace tessera::nn
