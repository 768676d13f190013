// Argument checks shared by the contrastive losses, with messages naming the loss and argument.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace tessera::losses::detail {

/// `t` must be a defined floating [batch, dim] tensor.
inline void check_features(const at::Tensor& t, const char* loss, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), loss, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.dim() == 2, loss, ": ", name, " must be [batch, dim], got shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), loss, ": ", name, " must be a floating tensor, got ",
                   t.scalar_type());
}

/// `t` must hold one value (0-d or [1]).
inline void check_scalar(const at::Tensor& t, const char* loss, const char* name) {
  TORCH_CHECK_VALUE(t.numel() == 1 && t.dim() <= 1, loss, ": ", name, " must be a scalar (0-d or [1]), got shape ",
                    t.sizes());
}

}  // namespace tessera::losses::detail
