// Per-pair sequence lengths, as soft-DTW and the global alignment kernel take them.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera::ops {

/// int64 [B] lengths on `like`'s device, each in [1, limit]; B copies of `limit` when `len` is
/// undefined. Refuses a floating or complex tensor (truncating 2.7 to 2 would be silent), another
/// shape, and a length out of range, naming `fn`, `name` and the first bad entry.
at::Tensor checked_lengths(const at::Tensor& len, int64_t B, int64_t limit, const char* fn, const char* name,
                           const at::Tensor& like);

/// `t` with the steps of dimension `dim` at or past each row's length (`len` [B], row = dim 0)
/// set to zero: padding may hold anything (tslearn pads with NaN), is never checked, and gets a
/// zero gradient (masked_fill's, so a NaN there does not turn it into 0 * NaN).
at::Tensor zero_past(const at::Tensor& t, const at::Tensor& len, int64_t dim);

}  // namespace tessera::ops
