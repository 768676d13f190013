#include "tessera/ops/onednn_linear.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

namespace tessera::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

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

/// Training: the forward and dX = dY W through oneDNN (W^T copied once per backward: a weight is
/// small next to the product), dW = dY^T X through ATen's mm, which reads X transposed in place
/// (copying the activations transposed for oneDNN made the Q-Former's step 0.94x instead of 1.13x).
/// A double backward (grad mode on inside backward) takes ATen's differentiable mm for dX too.
class OneDnnLinearFunction : public torch::autograd::Function<OneDnnLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {  // optional: apply() needs a device per tensor
    ctx->save_for_backward({x, weight});
    ctx->saved_data["bias"] = bias.has_value();
    return pointwise(x, weight, bias.value_or(at::Tensor()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &weight = saved[1];
    const at::Tensor dy = grads[0].contiguous();
    const bool differentiable = c10::GradMode::is_enabled();
    at::Tensor dx, dw, db;
    if (ctx->needs_input_grad(0))
      dx = differentiable ? at::mm(dy, weight) : pointwise(dy, weight.t().contiguous(), {});
    if (ctx->needs_input_grad(1))
      dw = at::mm(dy.t(), x);
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) db = dy.sum(0);  // absent: no input 2
    return {dx, dw, db};
  }
};

}  // namespace

void set_onednn_linear_enabled(bool on) { enabled_flag() = on; }
bool onednn_linear_enabled() { return enabled_flag(); }

bool onednn_linear_applies(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!enabled_flag() || !at::hasMKLDNN() || !at::globalContext().userEnabledMkldnn()) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || weight.scalar_type() != at::kFloat) return false;
  if (!weight.device().is_cpu() || weight.dim() != 2 || !weight.is_contiguous()) return false;
  if (bias.defined() && (bias.scalar_type() != at::kFloat || bias.dim() != 1 || !bias.is_contiguous())) return false;
  // Subclasses (DTensor, fake and functional tensors, vmap) and dispatch modes keep ATen's linear.
  if (at::isTensorSubclassLike(x) || at::isTensorSubclassLike(weight)) return false;
  if (bias.defined() && at::isTensorSubclassLike(bias)) return false;
  if (at::autocast::is_autocast_enabled(at::kCPU)) return false;
  const int64_t in = weight.size(1), out = weight.size(0);
  if (x.dim() < 2 || x.size(-1) != in || in < kOneDnnWidth || out < kOneDnnWidth) return false;
  return x.numel() / in >= kOneDnnRows && pointwise_op().has_value();
}

at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  const at::Tensor rows = x.reshape({-1, weight.size(1)}).contiguous();
  const bool grad = c10::GradMode::is_enabled() &&
                    (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()));
  const std::optional<at::Tensor> b = bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  return (grad ? OneDnnLinearFunction::apply(rows, weight, b) : pointwise(rows, weight, bias)).view(shape);
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  return onednn_linear_applies(x, weight, bias) ? onednn_linear(x, weight, bias) : at::linear(x, weight, bias);
}

}  // namespace tessera::ops
