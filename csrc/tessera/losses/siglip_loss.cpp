// SigLIP sigmoid loss (Zhai et al. 2023) with open_clip's SigLipLoss normalisation and labels.
#include "tessera/losses/siglip_loss.h"

#include "tessera/losses/input_checks.h"

#include <ATen/ATen.h>

namespace tessera::losses {

SigLipLossOutput siglip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                             const at::Tensor& logit_scale, const at::Tensor& logit_bias,
                             const at::Tensor& all_text_features, int64_t rank) {
  detail::check_features(image_features, "siglip_loss", "image_features");
  detail::check_features(text_features, "siglip_loss", "text_features");
  TORCH_CHECK_VALUE(image_features.sizes() == text_features.sizes(),
                    "siglip_loss: image_features and text_features must have the same shape, got ",
                    image_features.sizes(), " and ", text_features.sizes());
  TORCH_CHECK_VALUE(logit_scale.defined(), "siglip_loss: logit_scale is undefined");
  detail::check_scalar(logit_scale, "siglip_loss", "logit_scale");
  if (logit_bias.defined()) detail::check_scalar(logit_bias, "siglip_loss", "logit_bias");

  const int64_t batch = image_features.size(0);
  at::Tensor texts = text_features;
  int64_t offset = 0;
  if (all_text_features.defined()) {
    detail::check_features(all_text_features, "siglip_loss", "all_text_features");
    TORCH_CHECK_VALUE(batch > 0, "siglip_loss: an empty local batch (0 features) with all_text_features: the "
                      "world size is their count over the local batch");
    TORCH_CHECK_VALUE(all_text_features.size(1) == image_features.size(1) && all_text_features.size(0) % batch == 0,
                      "siglip_loss: all_text_features must be [world_size * ", batch, ", ", image_features.size(1),
                      "] (every rank must hold the same batch size), got ", all_text_features.sizes());
    const int64_t world_size = all_text_features.size(0) / batch;
    TORCH_CHECK_VALUE(rank >= 0 && rank < world_size, "siglip_loss: rank ", rank,
                      " is outside the gathered world of ", world_size, " ranks");
    texts = all_text_features;
    offset = rank * batch;
  }

  SigLipLossOutput out;
  // [B, D] x [D, N] -> [B, N]; scale applied to the features first, as open_clip writes it.
  out.logits = (logit_scale * image_features).mm(texts.t());
  if (logit_bias.defined()) out.logits = out.logits + logit_bias;
  // z = -1 everywhere, +1 where image i meets its own text (column offset + i).
  at::Tensor signs = at::full(out.logits.sizes(), -1.0, out.logits.options());
  signs.narrow(1, offset, batch).diagonal().fill_(1.0);
  out.contrastive_loss = -at::log_sigmoid(signs * out.logits).sum() / static_cast<double>(batch);
  return out;
}

}  // namespace tessera::losses
