#include "tessera/ops/onednn_linear.h"
#include "tessera/ops/kernel_guard.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

namespace tessera::ops {

namespace {

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> on{[] {
    const char* env = std::getenv("TESSERA_ONEDNN_LINEAR");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }()};
  return on;
}

/// LibTorch's oneDNN linear, looked up once; absent in a build without oneDNN.
const std::optional<c10::OperatorHandle>& pointwise_op() {
  static const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  return op;
}

/// x [M, K] contiguous against weight [N, K] contiguous, through the op (which has no autograd).
at::Tensor pointwise(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  torch::jit::Stack stack{x,
                          weight,
                          bias.defined() ? c10::IValue(bias) : c10::IValue(),
                          c10::IValue(std::string("none")),
                          c10::IValue(c10::List<std::optional<c10::Scalar>>()),
                          c10::IValue(std::string(""))};
  pointwise_op()->callBoxed(&stack);
  return stack.back().toTensor();
}

}  // namespace

void set_onednn_linear_enabled(bool on) { enabled_flag() = on; }
bool onednn_linear_enabled() { return enabled_flag(); }

bool onednn_linear_applies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!enabled_flag() || !at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat) return false;
  if (!weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous()) return false;
  if (bias.defined() && (!bias.device().is_cpu() || bias.scalar_type() != at::kFloat || bias.dim() != 1 ||
                         bias.size(0) != weight.size(0) || !bias.is_contiguous()))
    return false;  // at::linear gives the error a wrong bias deserves
  if (!own_kernel_may_take({x, weight, bias}) || at::autocast::is_autocast_enabled(at::kCPU)) return false;
  const int64_t in = weight.size(1), out = weight.size(0);
  if (x.dim() < 2 || x.size(-1) != in || in < kOneDnnWidth || out < kOneDnnWidth) return false;
  return x.numel() / in >= kOneDnnRows && pointwise_op().has_value();
}

at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  return pointwise(x.reshape({-1, weight.size(1)}).contiguous(), weight, bias).view(shape);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return onednn_linear_applies(x, weight, bias) ? onednn_linear(x, weight, bias) : at::linear(x, weight, bias);
}

}  // namespace tessera::ops
