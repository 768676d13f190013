// Two-layer perceptron fc2(act(fc1(x))) as a standalone module (CLIPMLP; LLaVA's projector names
// its layers linear_1 / linear_2). Transformer layers use TransformerBlock's own feed-forward.
#pragma once
#include "tessera/nn/activation.h"
#include "tessera/nn/linear.h"

#include <torch/arg.h>

#include <string>

namespace tessera::nn {

struct MlpOptions {
  MlpOptions(int64_t in_features, int64_t hidden_features) : in_features_(in_features), hidden_features_(hidden_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, hidden_features);
  /// Output size; 0 means in_features.
  TORCH_ARG(int64_t, out_features) = 0;
  TORCH_ARG(Activation, act) = Activation::gelu;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(std::string, fc1_name) = "fc1";
  TORCH_ARG(std::string, fc2_name) = "fc2";
};

/// Example: `Mlp mlp(MlpOptions(768, 3072).act(Activation::quick_gelu)); auto y = mlp(x);`
class MlpImpl : public Module<MlpImpl> {
 public:
  explicit MlpImpl(MlpOptions options);
  void reset() override;
  at::Tensor forward(const at::Tensor& x) const;
  MlpOptions options;
  Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

}  // namespace tessera::nn
