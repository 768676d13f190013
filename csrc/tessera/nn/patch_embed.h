// Patch embedding (Dosovitskiy et al. 2020): a stride-p convolution that turns an image into a
// sequence of patch vectors. Parameters are `weight`/`bias` of the conv itself, so the module
// sits where checkpoints keep a bare Conv2d (CLIP's `embeddings.patch_embedding`).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include "tessera/nn/module.h"

#include <torch/nn/pimpl.h>

namespace tessera::nn {

struct PatchEmbedOptions {
  PatchEmbedOptions(int64_t in_channels, int64_t embed_dim, int64_t patch_size)
      : in_channels_(in_channels), embed_dim_(embed_dim), patch_size_(patch_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(int64_t, patch_size);
  TORCH_ARG(bool, bias) = false;
};

class PatchEmbedImpl : public Module<PatchEmbedImpl> {
 public:
  explicit PatchEmbedImpl(PatchEmbedOptions options);
  void reset() override;
  /// PyTorch's Conv2d default: uniform in ±1/sqrt(fan_in).
  void reset_parameters();
  /// [B, C, H, W] -> [B, (H/p)*(W/p), embed_dim]; H and W must be multiples of the patch size.
  at::Tensor forward(const at::Tensor& pixel_values) const;
  const at::Tensor& weight() const { return param(weight_); }
  const at::Tensor& bias() const { return param(bias_); }
  PatchEmbedOptions options;

 private:
  Slot weight_, bias_;
};
TORCH_MODULE(PatchEmbed);

}  // namespace tessera::nn
