// Patch embedding as a strided convolution (timm PatchEmbed, HF CLIPVisionEmbeddings).
#include "tessera/nn/patch_embed.h"

#include <ATen/ATen.h>

#include <cmath>

namespace tessera::nn {

PatchEmbedImpl::PatchEmbedImpl(PatchEmbedOptions options_) : Module("Conv2d"), options(options_) { reset(); }

void PatchEmbedImpl::reset() {
  const int64_t p = options.patch_size();
  weight_ = add_parameter("weight", std::vector<int64_t>{options.embed_dim(), options.in_channels(), p, p});
  bias_ = options.bias() ? add_parameter("bias", std::vector<int64_t>{options.embed_dim()}) : Slot{};
  if (init_enabled()) reset_parameters();
}

void PatchEmbedImpl::reset_parameters() {
  at::NoGradGuard g;
  const double bound = 1.0 / std::sqrt(static_cast<double>(weight()[0].numel()));
  weight().uniform_(-bound, bound);
  if (options.bias()) bias().uniform_(-bound, bound);
}

at::Tensor PatchEmbedImpl::forward(const at::Tensor& x) const {
  const int64_t p = options.patch_size();
  TORCH_CHECK_VALUE(x.dim() == 4 && x.size(1) == options.in_channels(), "pixel_values must be [batch, ",
                    options.in_channels(), ", height, width], got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(2) % p == 0 && x.size(3) % p == 0, "pixel_values height and width ", x.size(2), "x",
                    x.size(3), " must be multiples of the patch size ", p);
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "pixel_values must be a floating tensor, got ",
                   x.scalar_type());
  at::Tensor y = at::conv2d(x.to(weight().scalar_type()), weight(), bias(), {p, p});
  // [B, D, h, w] -> [B, h*w, D]
  return y.flatten(2).transpose(1, 2);
}

}  // namespace tessera::nn
