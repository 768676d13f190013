// Feed-forward blocks: the two-layer MLP of ViT/CLIP (fc1 -> act -> fc2) and the gated MLP of
// LLaMA (down(act(gate(x)) * up(x))), with Hugging Face parameter names.
#pragma once
#include "tessera/nn/activation.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace tessera::nn {

struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t hidden_features) : in_features_(in_features), hidden_features_(hidden_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, hidden_features);
  /// Output size; 0 means in_features.
  TORCH_ARG(int64_t, out_features) = 0;
  TORCH_ARG(Activation, act) = Activation::gelu;
  TORCH_ARG(bool, bias) = true;
};

/// fc1 -> activation -> fc2. Example: `Mlp mlp(MlpOptions(768, 3072).act(Activation::quick_gelu));`
class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  explicit MlpImpl(MlpOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  MlpOptions options;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

/// down_proj(act(gate_proj(x)) * up_proj(x)) — LLaMA / SwiGLU.
class GatedMlpImpl : public torch::nn::Cloneable<GatedMlpImpl> {
 public:
  explicit GatedMlpImpl(MlpOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  MlpOptions options;
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(GatedMlp);

}  // namespace tessera::nn
