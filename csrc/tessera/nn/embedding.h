// Lookup table (torch.nn.Embedding): `weight` [num_embeddings, dim], read at call time.
#pragma once
#include "tessera/nn/module.h"

#include <torch/nn/pimpl.h>

namespace tessera::nn {

/// Example: `Embedding tok(49408, 512); auto h = tok(input_ids);`
class EmbeddingImpl : public Module<EmbeddingImpl> {
 public:
  /// `padding_idx` (>= 0): that row gets no gradient, as torch.nn.Embedding's.
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim, int64_t padding_idx = -1);
  void reset() override;
  /// N(0, 1), PyTorch's default.
  void reset_parameters();
  /// ids [...] int64 -> [..., dim]
  /// Rows of `ids`; `check_ids` refuses ids outside the table by name (a decoding step may skip it:
  /// its ids come from the model's own logits).
  at::Tensor forward(const at::Tensor& ids, bool check_ids = true) const;
  const at::Tensor& weight() const { return param(weight_); }
  int64_t num_embeddings, embedding_dim, padding_idx;

 private:
  Slot weight_;
};
TORCH_MODULE(Embedding);

}  // namespace tessera::nn
