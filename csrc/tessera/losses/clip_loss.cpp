// CLIP InfoNCE (Radford et al. 2021) following open_clip's ClipLoss: same logits, same labels,
// same products in the same order ((scale * features) @ other^T), so float32 results agree with
// open_clip to rounding.
#include "tessera/losses/clip_loss.h"

#include "tessera/losses/input_checks.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

namespace tessera::losses {

at::Tensor clip_loss_labels(int64_t num_rows, bool local_loss, int64_t rank, at::Device device) {
  at::Tensor labels = at::arange(num_rows, at::TensorOptions().dtype(at::kLong).device(device));
  // Every rank has the same local batch (all_gather needs equal shapes), so rank r's positives
  // start at column r * num_rows of the gathered batch.
  return local_loss ? labels + num_rows * rank : labels;
}

ClipLossOutput clip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                         const at::Tensor& logit_scale, const at::Tensor& all_image_features,
                         const at::Tensor& all_text_features, const ClipLossOptions& options,
                         const at::Tensor& logit_bias, const at::Tensor& labels) {
  detail::check_features(image_features, "clip_loss", "image_features");
  detail::check_features(text_features, "clip_loss", "text_features");
  TORCH_CHECK_VALUE(image_features.sizes() == text_features.sizes(),
                    "clip_loss: image_features and text_features must have the same shape, got ",
                    image_features.sizes(), " and ", text_features.sizes());
  TORCH_CHECK_VALUE(logit_scale.defined(), "clip_loss: logit_scale is undefined");
  detail::check_scalar(logit_scale, "clip_loss", "logit_scale");
  if (logit_bias.defined()) detail::check_scalar(logit_bias, "clip_loss", "logit_bias");
  TORCH_CHECK_VALUE(all_image_features.defined() == all_text_features.defined(),
                    "clip_loss: pass both all_image_features and all_text_features, or neither");

  const bool gathered = all_image_features.defined();
  const bool local = gathered && options.local_loss();
  const int64_t batch = image_features.size(0);
  ClipLossOutput out;
  if (!gathered) {
    // Single process. open_clip forms both products rather than transposing one; we follow it
    // so the float32 rounding matches.
    out.logits_per_image = (logit_scale * image_features).mm(text_features.t());
    out.logits_per_text = (logit_scale * text_features).mm(image_features.t());
  } else {
    detail::check_features(all_image_features, "clip_loss", "all_image_features");
    detail::check_features(all_text_features, "clip_loss", "all_text_features");
    TORCH_CHECK_VALUE(all_image_features.sizes() == all_text_features.sizes() &&
                          all_image_features.size(1) == image_features.size(1),
                      "clip_loss: gathered features must be [N, ", image_features.size(1),
                      "] for both towers, got ", all_image_features.sizes(), " and ", all_text_features.sizes());
    TORCH_CHECK_VALUE(batch > 0, "clip_loss: an empty local batch (0 features) with gathered features: the "
                      "world size is their count over the local batch");
    TORCH_CHECK_VALUE(all_image_features.size(0) % batch == 0, "clip_loss: gathered batch ",
                      all_image_features.size(0), " is not a multiple of the local batch ", batch,
                      " (every rank must hold the same batch size)");
    const int64_t world_size = all_image_features.size(0) / batch;
    if (local) {
      TORCH_CHECK_VALUE(options.rank() >= 0 && options.rank() < world_size, "clip_loss: rank ",
                        options.rank(), " is outside the gathered world of ", world_size, " ranks");
      // [B, D] x [D, N] -> [B, N]: this rank's rows against every rank's columns.
      out.logits_per_image = (logit_scale * image_features).mm(all_text_features.t());
      out.logits_per_text = (logit_scale * text_features).mm(all_image_features.t());
    } else {
      // [N, N] on every rank; identical everywhere, so per-rank losses are equal.
      out.logits_per_image = (logit_scale * all_image_features).mm(all_text_features.t());
      out.logits_per_text = out.logits_per_image.t();
    }
  }
  if (logit_bias.defined()) {
    // Added once to each. (open_clip adds in place; in its global branch logits_per_text is a
    // view of logits_per_image, so the bias lands twice there. Harmless, as the bias cancels
    // in the softmax either way, but we do not reproduce it.)
    out.logits_per_image = out.logits_per_image + logit_bias;
    out.logits_per_text = out.logits_per_text + logit_bias;
  }

  const int64_t rows = out.logits_per_image.size(0);
  at::Tensor targets = labels;
  if (targets.defined()) {
    TORCH_CHECK_VALUE(targets.dim() == 1 && targets.size(0) == rows, "clip_loss: labels must be [", rows,
                      "], got shape ", targets.sizes());
    TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, "clip_loss: labels must be int64, got ",
                     targets.scalar_type());
  } else {
    targets = clip_loss_labels(rows, local, options.rank(), image_features.device());
  }
  out.contrastive_loss = (at::cross_entropy_loss(out.logits_per_image, targets) +
                          at::cross_entropy_loss(out.logits_per_text, targets)) /
                         2;
  return out;
}

at::Tensor clamp_logit_scale(const at::Tensor& log_scale, double max_scale) {
  TORCH_CHECK_VALUE(log_scale.defined(), "clamp_logit_scale: log_scale is undefined");
  TORCH_CHECK_VALUE(max_scale >= 1.0, "clamp_logit_scale: max_scale must be >= 1, got ", max_scale);
  // A leaf parameter may not be modified in place while autograd records; this is an update
  // to the parameter's value, like the optimizer step before it, not part of the graph.
  at::NoGradGuard no_grad;
  log_scale.clamp_(0.0, std::log(max_scale));
  return log_scale;
}

}  // namespace tessera::losses
