// Bicubic position-embedding resampling (timm layers/pos_embed.py behaviour).
#include "tessera/nn/pos_embed_resize.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::nn {

at::Tensor pos_embed_resize(const at::Tensor& posemb, int64_t new_h, int64_t new_w, int64_t old_h, int64_t old_w,
                            int64_t num_prefix_tokens, bool antialias) {
  TORCH_CHECK_VALUE(posemb.dim() == 2 || (posemb.dim() == 3 && posemb.size(0) == 1),
                    "pos_embed_resize expects [N, D] or [1, N, D], got ", posemb.sizes());
  at::Tensor pe = posemb.dim() == 2 ? posemb.unsqueeze(0) : posemb;
  const int64_t n_grid = pe.size(1) - num_prefix_tokens;
  if (old_h <= 0 || old_w <= 0) {
    old_h = old_w = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(n_grid))));
  }
  TORCH_CHECK_VALUE(old_h * old_w == n_grid, "pos_embed_resize: ", n_grid, " grid rows do not form a ", old_h,
                    "x", old_w, " grid (", num_prefix_tokens, " prefix tokens)");
  if (old_h == new_h && old_w == new_w) return posemb;
  const int64_t D = pe.size(2);
  at::Tensor prefix = pe.narrow(1, 0, num_prefix_tokens);
  // [1, h*w, D] -> [1, D, h, w], interpolate in fp32, back to [1, h'*w', D]
  at::Tensor grid = pe.narrow(1, num_prefix_tokens, n_grid).reshape({1, old_h, old_w, D}).permute({0, 3, 1, 2});
  // F.interpolate(mode="bicubic", antialias=True) takes the anti-aliased kernel (PIL's a=-0.5)
  // for up- and down-sampling alike, so this follows timm's default exactly.
  grid = antialias ? at::_upsample_bicubic2d_aa(grid.to(at::kFloat), {new_h, new_w}, false)
                   : at::upsample_bicubic2d(grid.to(at::kFloat), {new_h, new_w}, false);
  grid = grid.permute({0, 2, 3, 1}).reshape({1, new_h * new_w, D}).to(pe.scalar_type());
  at::Tensor out = at::cat({prefix, grid}, 1);
  return posemb.dim() == 2 ? out.squeeze(0) : out;
}

}  // namespace tessera::nn
