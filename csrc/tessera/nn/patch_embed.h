// Patch embedding (Dosovitskiy et al. 2020): a stride-p convolution that turns an image into a
// sequence of patch vectors. Parameters are `weight`/`bias` of the conv itself, so the module
// sits where checkpoints keep a bare Conv2d (CLIP's `embeddings.patch_embedding`).
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
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

class PatchEmbedImpl : public torch::nn::Cloneable<PatchEmbedImpl> {
 public:
  explicit PatchEmbedImpl(PatchEmbedOptions options);
  void reset() override;
  /// [B, C, H, W] -> [B, (H/p)*(W/p), embed_dim]; H and W must be multiples of the patch size.
  at::Tensor forward(const at::Tensor& pixel_values);
  PatchEmbedOptions options;
  at::Tensor weight, bias;
};
TORCH_MODULE(PatchEmbed);

}  // namespace tessera::nn
