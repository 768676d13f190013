// Activation checkpointing (Chen et al. 2016; torch.utils.checkpoint, reentrant variant): run
// `fn` without storing its activations and recompute them during backward.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>

namespace tessera::nn {

/// y = fn(x), with fn's intermediate activations recomputed in backward. Gradients reach x and
/// every parameter fn uses. Dropout inside fn is not replayed with the same RNG state.
at::Tensor checkpoint(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x);

}  // namespace tessera::nn
