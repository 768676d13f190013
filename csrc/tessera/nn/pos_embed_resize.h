// Resizing absolute position embeddings to another patch grid (timm resample_abs_pos_embed):
// prefix tokens (class token) are set aside, the grid is interpolated bicubically in fp32.
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::nn {

/// posemb [N, D] or [1, N, D] holding `num_prefix_tokens` + old_h*old_w rows ->
/// the same rank with num_prefix_tokens + new_h*new_w rows. The result keeps posemb's dtype.
at::Tensor pos_embed_resize(const at::Tensor& posemb, int64_t new_h, int64_t new_w, int64_t old_h = 0,
                            int64_t old_w = 0, int64_t num_prefix_tokens = 1, bool antialias = true);

}  // namespace tessera::nn
