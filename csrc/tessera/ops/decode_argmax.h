// Greedy decoding's choice: the first index of each row's largest score. ATen's argmax spends
// 30-58 µs on one row of 32,000 fp32 logits on this class of CPU, 1-2 % of a llama-50m bf16
// decoding step; two AVX-512 passes take ~2.5 µs (a plain loop elsewhere).
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::ops {

/// CPU fp32 scores [rows, n], n >= 1, rows at most kDecodeRows, no autograd.
bool decode_argmax_applies(const at::Tensor& scores);

/// int64 [rows]: torch.argmax(scores, -1) exactly, ties to the first index and a NaN counting as
/// the largest value (the first NaN is chosen).
at::Tensor decode_argmax(const at::Tensor& scores);

}  // namespace tessera::ops
