// Whether one of tessera's own kernels (decode_*, the oneDNN linear) may take these tensors in place
// of ATen's op. Those kernels have no derivative and run below the dispatcher, so they must refuse
// whatever would otherwise be lost without a word: a gradient autograd would track, a forward-mode
// tangent, a tensor subclass (DTensor, fake, functional, vmapped) or an active dispatch mode (FLOP
// counters, fake tensor mode), which expect to see ATen's ops. Undefined tensors pass.
#pragma once
#include <ATen/core/Tensor.h>

#include <initializer_list>

namespace tessera::ops {

bool own_kernel_may_take(std::initializer_list<at::Tensor> tensors);

}  // namespace tessera::ops
