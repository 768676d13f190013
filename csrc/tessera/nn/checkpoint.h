// Activation checkpointing (Chen et al. 2016; torch.utils.checkpoint, reentrant variant): run
// `fn` without storing its activations and recompute them during backward.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace tessera::nn {

using CheckpointFn = std::function<at::Tensor(const std::vector<at::Tensor>& inputs)>;

/// y = fn(inputs), with fn's intermediate activations recomputed in backward. Every input that
/// requires grad gets its gradient (undefined inputs are allowed), and so does every parameter fn
/// uses. The recomputation replays the CPU and CUDA random states and the autocast state of the
/// forward, so dropout and mixed precision give the same values as without checkpointing.
/// `parameters_need_grad`: fn uses parameters that require grad. A reentrant checkpoint joins the
/// graph only through its inputs, so with every input frozen (LoRA on a frozen base, frozen
/// embeddings) those parameters would get no gradient; an empty leaf that requires grad keeps y
/// in the graph, as torch's non-reentrant checkpoint and transformers' enable_input_require_grads.
at::Tensor checkpoint(CheckpointFn fn, const std::vector<at::Tensor>& inputs, bool parameters_need_grad = false);

}  // namespace tessera::nn
