// y = x W^T + b, with `weight` [out, in] and optional `bias` read at call time (see module.h).
#pragma once
#include "tessera/nn/module.h"
#include "tessera/ops/decode_linear.h"

#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>

namespace tessera::nn {

/// A LoRA adapter (Hu et al. 2021): y = W x + b + scale * B(A(dropout(x))), with
/// scale = alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski 2023). PEFT's names and init:
/// `lora_A.weight` [r, in] kaiming-uniform, `lora_B.weight` [out, r] zeros.
struct LoraOptions {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool use_rslora = false;
  double scale() const;
};

/// Example: `Linear proj(768, 512, /*bias=*/false); auto y = proj(x);`
class LinearImpl : public Module<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  void reset() override;
  /// LibTorch's / PyTorch's default: kaiming-uniform weight, uniform bias in ±1/sqrt(in).
  void reset_parameters();
  at::Tensor forward(const at::Tensor& x) const;
  const at::Tensor& weight() const { return param(weight_); }
  const at::Tensor& bias() const { return param(bias_); }
  /// Adds a LoRA adapter (children `lora_A`, `lora_B`); the base weight is frozen by the caller.
  void add_lora(const LoraOptions& options);
  /// W += scale * B A (forward then skips the adapter) / the inverse. Idempotent.
  void merge_lora();
  void unmerge_lora();
  bool has_lora() const { return lora_options.has_value(); }
  /// Int8 weight-only decoding: decoding steps read an int8 copy of the weight with per-row
  /// scales (ops::decode_linear_int8), made on first use and again whenever the weight changes;
  /// every other forward (and autograd) uses the weight itself.
  void set_int8_decoding(bool on);
  bool int8_decoding() const { return int8_on_; }
  /// A decoding kernel's result for x when one applies (int8 if set, else the weight's own
  /// dtype: ops::decode_linear; on CUDA, fp32 from a half-precision weight when `out_dtype` asks
  /// for it: ops::cuda_linear_fp32_out), nullopt otherwise (at::linear's turn), and always with
  /// an unmerged LoRA adapter.
  std::optional<at::Tensor> decode(const at::Tensor& x, std::optional<at::ScalarType> out_dtype = std::nullopt) const;
  /// The weight (and bias) as that kernel reads them against rows of `x_dtype` (which the caller
  /// has checked with ops::decode_rows_apply), for a caller that runs the product on its own
  /// buffers (nn::decode_layer); nullopt where decode would refuse the weight.
  std::optional<ops::DecodeWeight> decode_weight(at::ScalarType x_dtype) const;
  void adopt_structure(const ModuleBase& original) override;
  int64_t in_features, out_features;
  bool with_bias;
  std::optional<LoraOptions> lora_options;
  bool lora_merged = false;
  std::shared_ptr<LinearImpl> lora_A, lora_B;

 private:
  void build_lora();
  Slot weight_, bias_;
  bool int8_on_ = false;
  // The int8 copy and what it was made from (the weight's storage and version counter).
  mutable at::Tensor q_weight_, q_scale_;
  mutable int64_t q_version_ = -1;
  mutable const void* q_source_ = nullptr;
};
TORCH_MODULE(Linear);

}  // namespace tessera::nn
