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

}  // namespace tessera::ops
