// CLIP's symmetric InfoNCE loss (Radford et al. 2021, "Learning Transferable Visual Models From
// Natural Language Supervision"), with the distributed semantics of open_clip's ClipLoss
// (loss.py: get_logits, get_ground_truth). The math only: gathering across ranks is the caller's
// job (python/tessera/losses/distributed.py), so this file needs no process group.
#pragma once
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>

namespace tessera::losses {

struct ClipLossOptions {
  /// open_clip's `local_loss`: this rank's B rows against all N gathered columns ([B, N] logits,
  /// labels offset by rank * B) instead of the full [N, N] logits on every rank. Only read when
  /// gathered features are passed.
  TORCH_ARG(bool, local_loss) = false;
  /// This process's rank in the gather; with local_loss, row i's positive is column rank * B + i.
  TORCH_ARG(int64_t, rank) = 0;
};

/// Named terms of the loss, plus the logits it was computed from (transformers' CLIPOutput names).
struct ClipLossOutput {
  at::Tensor contrastive_loss;  ///< scalar: (CE(logits_per_image) + CE(logits_per_text)) / 2
  at::Tensor logits_per_image;  ///< [B, B] single process, [B, N] local_loss, [N, N] global
  at::Tensor logits_per_text;   ///< same shape; rows are texts
};

/// Symmetric cross-entropy over scaled cosine logits.
///
/// image_features, text_features: [B, D], this rank's (normally L2-normalised) embeddings.
/// logit_scale: 0-d or [1]; the *already exponentiated* scale (open_clip passes
///   `model.logit_scale.exp()`); keeping it <= 100 is the model's job, see clamp_logit_scale.
/// all_image_features, all_text_features: [N = world_size * B, D] from gather_features, or both
///   undefined for a single process. Without local_loss the local tensors are not read: the
///   gathered ones already hold them (spliced in, or gathered with grad).
/// logit_bias: optional 0-d or [1], added to every logit. Cross-entropy is invariant to a shift
///   of a whole row, so it changes neither the loss nor any gradient (its own gradient is 0);
///   accepted because open_clip's ClipLoss accepts it.
/// labels: optional [rows] int64 targets (a cached arange); built from options when undefined.
///
/// Example: `auto out = clip_loss(img, txt, scale); out.contrastive_loss.backward();`
ClipLossOutput clip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                         const at::Tensor& logit_scale, const at::Tensor& all_image_features = {},
                         const at::Tensor& all_text_features = {}, const ClipLossOptions& options = {},
                         const at::Tensor& logit_bias = {}, const at::Tensor& labels = {});

/// The targets clip_loss builds: arange(num_rows) + offset, offset = rank * num_rows when
/// local_loss (each rank's positives sit in its own column block of the gathered batch), else 0.
at::Tensor clip_loss_labels(int64_t num_rows, bool local_loss, int64_t rank, at::Device device);

/// open_clip's guard on the learnable temperature, applied in place after optimizer.step():
/// clamps the *log* scale parameter to [0, ln(max_scale)] without recording autograd, so
/// exp(log_scale) stays in [1, max_scale]. We provide this parameter clamp rather than a clamp
/// of exp() in the forward pass (which would zero the gradient whenever the scale sits at the
/// cap). Returns log_scale.
///
/// Example: `optimizer.step(); clamp_logit_scale(model->logit_scale);`
at::Tensor clamp_logit_scale(const at::Tensor& log_scale, double max_scale = 100.0);

}  // namespace tessera::losses
