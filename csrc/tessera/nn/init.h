// transformers' default _init_weights for tessera's leaves: linear weights from N(0, std) with zero
// biases, norms to ones and zeros. Families add their own parameters after it.
#pragma once
#include <torch/nn/module.h>

namespace tessera::nn {

/// Every Linear and Norm below `root` (not `root` itself).
void init_linears_and_norms(torch::nn::Module& root, double std);

}  // namespace tessera::nn
