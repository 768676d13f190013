#include "tessera/ops/sequence_lengths.h"

#include <ATen/ATen.h>

#include <vector>

namespace tessera::ops {

at::Tensor checked_lengths(const at::Tensor& len, int64_t B, int64_t limit, const char* fn, const char* name,
                           const at::Tensor& like) {
  if (!len.defined()) return at::full({B}, limit, like.options().dtype(at::kLong));
  TORCH_CHECK_TYPE(!at::isFloatingType(len.scalar_type()) && !at::isComplexType(len.scalar_type()) &&
                       len.scalar_type() != at::kBool,
                   fn, ": ", name, " must be an integer tensor, got ", len.scalar_type());
  TORCH_CHECK_VALUE(len.dim() == 1 && len.size(0) == B, fn, ": ", name, " must be [", B,
                    "] (one length per pair), got shape ", len.sizes());
  at::Tensor out = len.to(like.device(), at::kLong).contiguous();
  if (B > 0) {
    const auto lo = out.min().item<int64_t>(), hi = out.max().item<int64_t>();
    if (lo < 1 || hi > limit) {
      const int64_t bad = ((out < 1) | (out > limit)).nonzero()[0][0].item<int64_t>();
      TORCH_CHECK_VALUE(false, fn, ": ", name, "[", bad, "] = ", out[bad].item<int64_t>(),
                        " is out of range: lengths must lie in [1, ", limit, "]");
    }
  }
  return out;
}

at::Tensor zero_past(const at::Tensor& t, const at::Tensor& len, int64_t dim) {
  std::vector<int64_t> shape(t.dim(), 1);
  shape[0] = t.size(0);
  shape[dim] = t.size(dim);
  const at::Tensor past = at::arange(t.size(dim), len.options()).view({1, -1}) >= len.view({-1, 1});
  return t.masked_fill(past.view(shape), 0);
}

}  // namespace tessera::ops
