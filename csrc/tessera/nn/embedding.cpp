// Embedding table on tessera's call-time parameter slots.
#include "tessera/nn/embedding.h"

#include <ATen/ATen.h>

namespace tessera::nn {

EmbeddingImpl::EmbeddingImpl(int64_t n, int64_t dim, int64_t pad)
    : Module("Embedding"), num_embeddings(n), embedding_dim(dim), padding_idx(pad) {
  reset();
}

void EmbeddingImpl::reset() {
  weight_ = add_parameter("weight", std::vector<int64_t>{num_embeddings, embedding_dim});
  if (init_enabled()) reset_parameters();
}

void EmbeddingImpl::reset_parameters() {
  at::NoGradGuard g;
  weight().normal_(0.0, 1.0);  // torch.nn.Embedding's default
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids, bool check_ids) const {
  // at::embedding's own error ("index out of range in self") names neither the id nor the table.
  if (check_ids && ids.numel() > 0) {
    const auto [lo, hi] = at::aminmax(ids);
    const int64_t min_id = lo.item<int64_t>(), max_id = hi.item<int64_t>();
    TORCH_CHECK_INDEX(min_id >= 0 && max_id < num_embeddings, "token id ", min_id < 0 ? min_id : max_id,
                      " is outside the embedding table of ", num_embeddings, " rows (ids must be in [0, ",
                      num_embeddings, "): a tokenizer larger than the model's vocab_size?)");
  }
  return at::embedding(weight(), ids, padding_idx);
}

}  // namespace tessera::nn
