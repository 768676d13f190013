// y = x W^T + b through oneDNN for fp32 inference on CPU. LibTorch's eager at::linear runs fp32 GEMMs
// through MKL, which on this project's AMD CPUs reaches 0.5-0.85x of oneDNN's rate at 128+ rows
// (benchmarks/onednn_linear.py, docs/performance.md); LibTorch ships oneDNN too (its
// `mkldnn::_linear_pointwise` op, the one torch.compile's CPU backend calls), so nn::Linear and the
// LM heads hand it the products where it wins. Inference only: as an autograd function (forward and
// dX through oneDNN, dW through ATen's mm) a training step measured 0.99-1.13x, within this machine's
// noise, for a second backward to maintain, so training keeps at::linear and its backward.
//
// Applies (`onednn_linear_applies`): CPU, fp32 x, weight and bias, no gradient through any of them
// (autograd or a forward-mode tangent), plain tensors (no DTensor, fake, functional or vmapped
// tensor, no dispatch mode), no autocast, torch.backends.mkldnn enabled, the op present, at least
// kOneDnnRows rows and both weight sides at least kOneDnnWidth (below that oneDNN's per-call cost
// outweighs its kernels), and TESSERA_ONEDNN_LINEAR not set to 0.
#pragma once
#include <ATen/core/Tensor.h>

namespace tessera::ops {

constexpr int64_t kOneDnnRows = 128;
constexpr int64_t kOneDnnWidth = 256;

/// Whether onednn_linear serves (x, weight, bias): see the file comment.
bool onednn_linear_applies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// x [..., in] fp32, weight [out, in] fp32, bias [out] or undefined: at::linear's result, to fp32
/// rounding (the sums run in another order).
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

/// at::linear(x, weight, bias), through oneDNN where it applies: the call sites' one entry.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

/// Switches the path off (or back on) for this process; the default reads TESSERA_ONEDNN_LINEAR.
void set_onednn_linear_enabled(bool on);
bool onednn_linear_enabled();

}  // namespace tessera::ops
