#include "tessera/ops/kernel_guard.h"

#include <ATen/TensorSubclassLikeUtils.h>
#include <c10/core/GradMode.h>

namespace tessera::ops {

bool own_kernel_may_take(std::initializer_list<at::Tensor> tensors) {
  const bool grad_mode = c10::GradMode::is_enabled();
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) continue;
    if ((grad_mode && t.requires_grad()) || t._fw_grad(/*level=*/0).defined() || at::isTensorSubclassLike(t))
      return false;
  }
  return true;
}

}  // namespace tessera::ops
