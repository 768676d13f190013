// SigLIP's pairwise sigmoid loss (Zhai et al. 2023, "Sigmoid Loss for Language Image
// Pre-Training"), normalised and distributed as open_clip's SigLipLoss (loss.py) does it.
// The math only: the caller gathers the texts (python/tessera/losses/distributed.py).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace tessera::losses {

/// Named terms of the loss and the logits it was computed from.
struct SigLipLossOutput {
  at::Tensor contrastive_loss;  ///< scalar
  at::Tensor logits;            ///< [B, B] single process, [B, N] with gathered texts
};

/// Every image-text pair is an independent binary problem:
///   logits = logit_scale * img @ txt^T + logit_bias,  z_ij = +1 if i and j are a pair else -1,
///   loss   = -sum_ij log sigmoid(z_ij * logits_ij) / B        (B = this rank's batch).
/// On one process this is the paper's -1/|B| sum over all pairs. Distributed, open_clip divides
/// each rank's sum by its local B (not by the number of pairs it scored), and so do we.
///
/// Distributed ("all-gather" variant): pass all_text_features [N = world_size * B, D], every
/// rank's texts in rank order. Rank r then scores its own B images against all N texts, with
/// positives only on the diagonal of its own column block [r * B, (r + 1) * B). Each image-text
/// pair of the global batch is scored on exactly one rank (the one holding the image), so the
/// per-rank losses sum to world_size times the single-process loss over the whole batch. This
/// equals open_clip's SigLipLoss for every dist_impl ("bidir", "shift", "reduce", "gather"):
/// they only move the same text blocks differently. text_features is then only shape-checked:
/// the gathered tensor already holds it (gathered with grad, so its gradient flows back).
///
/// logit_scale: 0-d or [1], already exponentiated (the paper initialises log t = log 10).
/// logit_bias: 0-d or [1] (the paper initialises b = -10), or undefined for none.
///
/// Example: `auto out = siglip_loss(img, txt, scale, bias); out.contrastive_loss.backward();`
SigLipLossOutput siglip_loss(const at::Tensor& image_features, const at::Tensor& text_features,
                             const at::Tensor& logit_scale, const at::Tensor& logit_bias = {},
                             const at::Tensor& all_text_features = {}, int64_t rank = 0);

}  // namespace tessera::losses
