#include "tessera/nn/pooling.h"

#include <c10/util/Exception.h>

namespace tessera::nn {

void check_token_features(const at::Tensor& features, int64_t width, int64_t min_tokens, const char* what) {
  TORCH_CHECK_VALUE(features.defined() && features.dim() == 3 && features.size(1) >= min_tokens &&
                        features.size(2) == width,
                    what, ": features must be [batch, tokens >= ", min_tokens, ", ", width,
                    "] (forward_features' output), got ", features.defined() ? features.sizes() : at::IntArrayRef{});
}

at::Tensor class_token(const at::Tensor& features, int64_t width, const char* what) {
  check_token_features(features, width, 1, what);
  return features.select(1, 0);
}

at::Tensor patch_mean(const at::Tensor& features, int64_t width, int64_t prefix, const char* what) {
  check_token_features(features, width, prefix + 1, what);
  return features.slice(1, prefix).mean(1);
}

}  // namespace tessera::nn
