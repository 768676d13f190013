// Linear layer (torch.nn.Linear) on tessera's call-time parameter slots.
#include "tessera/nn/linear.h"

#include "tessera/ops/decode_linear.h"
#include "tessera/ops/linear_fp32_out.h"
#include "tessera/ops/kernel_guard.h"
#include "tessera/ops/onednn_linear.h"

#include <ATen/ATen.h>

#include <cmath>
#include <tuple>

namespace tessera::nn {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool bias)
    : Module("Linear"), in_features(in), out_features(out), with_bias(bias) {
  reset();
}

void LinearImpl::reset() {
  // Families build under NoInitGuard and initialise every parameter once (init_weights).
  weight_ = add_parameter("weight", std::vector<int64_t>{out_features, in_features});
  bias_ = with_bias ? add_parameter("bias", std::vector<int64_t>{out_features}) : Slot{};
  if (init_enabled()) reset_parameters();
  if (lora_options) build_lora();  // a clone rebuilds its adapter too
}

double LoraOptions::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

void LinearImpl::build_lora() {
  const int64_t r = lora_options->r;
  lora_A = std::make_shared<LinearImpl>(in_features, r, false);  // kaiming-uniform, as PEFT's
  lora_B = std::make_shared<LinearImpl>(r, out_features, false);
  {
    at::NoGradGuard g;
    lora_B->weight().zero_();  // the adapter starts as the identity update
  }
  register_module("lora_A", lora_A);
  register_module("lora_B", lora_B);
}

void LinearImpl::add_lora(const LoraOptions& options) {
  TORCH_CHECK_VALUE(!lora_options, "this linear layer already has a LoRA adapter");
  TORCH_CHECK_VALUE(options.r > 0, "LoRA rank r must be positive, got ", options.r);
  TORCH_CHECK_VALUE(options.dropout >= 0 && options.dropout < 1, "LoRA dropout must be in [0, 1), got ",
                    options.dropout);
  lora_options = options;
  build_lora();
  lora_A->weight().set_requires_grad(true);
  lora_B->weight().set_requires_grad(true);
}

void LinearImpl::adopt_structure(const ModuleBase& original) {
  const auto* src = dynamic_cast<const LinearImpl*>(&original);
  if (!src || !src->lora_options || lora_options) return;
  add_lora(*src->lora_options);
  lora_merged = src->lora_merged;
}

void LinearImpl::merge_lora() {
  if (!lora_options || lora_merged) return;
  at::NoGradGuard g;
  weight().add_(at::matmul(lora_B->weight(), lora_A->weight()).to(weight().scalar_type()), lora_options->scale());
  lora_merged = true;
}

void LinearImpl::unmerge_lora() {
  if (!lora_options || !lora_merged) return;
  at::NoGradGuard g;
  weight().sub_(at::matmul(lora_B->weight(), lora_A->weight()).to(weight().scalar_type()), lora_options->scale());
  lora_merged = false;
}

void LinearImpl::reset_parameters() {
  at::NoGradGuard g;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight().uniform_(-bound, bound);  // kaiming_uniform_(a=sqrt(5)) reduces to this bound
  if (with_bias) bias().uniform_(-bound, bound);
}

void LinearImpl::set_int8_decoding(bool on) {
  int8_on_ = on;
  q_weight_ = q_scale_ = at::Tensor();
  q_source_ = nullptr;
}

std::optional<ops::DecodeWeight> LinearImpl::decode_weight(at::ScalarType x_dtype) const {
  if (lora_options && !lora_merged) return std::nullopt;
  const at::Tensor& w = weight();
  if (!w.device().is_cpu() || !ops::own_kernel_may_take({w})) return std::nullopt;
  if (int8_on_) {
    if (!q_weight_.defined() || q_version_ != w._version() || q_source_ != w.data_ptr()) {
      std::tie(q_weight_, q_scale_) = ops::quantize_int8_rows(w);
      q_version_ = w._version();
      q_source_ = w.data_ptr();
    }
    return ops::decode_weight_int8(q_weight_, q_scale_, bias());
  }
  if (ops::decode_weight_applies(w, x_dtype)) return ops::decode_weight(w, bias());
  return std::nullopt;
}

std::optional<at::Tensor> LinearImpl::decode(const at::Tensor& x, std::optional<at::ScalarType> out_dtype) const {
  if (lora_options && !lora_merged) return std::nullopt;
  if (x.is_cuda()) return out_dtype == at::kFloat ? ops::cuda_linear_fp32_out(x, weight(), bias()) : std::nullopt;
  if (!ops::decode_rows_apply(x, in_features)) return std::nullopt;
  if (std::optional<ops::DecodeWeight> w = decode_weight(x.scalar_type())) return ops::decode_linear(x, *w, out_dtype);
  return std::nullopt;
}

at::Tensor LinearImpl::forward(const at::Tensor& x) const {
  const bool plain = !lora_options || lora_merged;
  if (plain)
    if (std::optional<at::Tensor> y = decode(x)) return *y;
  at::Tensor y = ops::linear(x, weight(), bias());
  if (plain) return y;
  at::Tensor h = at::dropout(x, lora_options->dropout, is_training());
  return y + at::linear(at::linear(h, lora_A->weight()), lora_B->weight()) * lora_options->scale();
}

}  // namespace tessera::nn
