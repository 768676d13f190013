// Embedding table on tessera's call-time parameter slots.
#include "tessera/nn/embedding.h"

#include <ATen/ATen.h>

namespace tessera::nn {

EmbeddingImpl::EmbeddingImpl(int64_t n, int64_t dim, int64_t pad)
    : Module("Embedding"), num_embeddings(n), embedding_dim(dim), padding_idx(pad) {
  reset();
}

void EmbeddingImpl::reset() {
  weight_ = add_parameter("weight", at::empty({num_embeddings, embedding_dim}));
  if (init_enabled()) reset_parameters();
}

void EmbeddingImpl::reset_parameters() {
  at::NoGradGuard g;
  weight().normal_(0.0, 1.0);  // torch.nn.Embedding's default
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) const { return at::embedding(weight(), ids, padding_idx); }

}  // namespace tessera::nn
