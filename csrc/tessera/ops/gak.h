// Cuturi's global alignment kernel (ICML 2007; "Fast global alignment kernels", ICML 2011) and
// Sugar's triple-kernel slice cost, on top of ops::soft_dtw: the GAK is a sum over every
// alignment of the product of local kernels, so -log K = soft_dtw(gamma = 1) of the local cost
// phi_sigma = phi / (2 sigma^2) + log(2 - exp(-phi / (2 sigma^2))).
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>

namespace tessera::ops {

struct GakOptions {
  /// The Gaussian bandwidth. Unset: sigma = delta * sqrt((n + m) / 2) per pair (n, m its lengths);
  /// the normalised form's K(x, x) and K(y, y) use the pair's sigma too.
  std::optional<double> sigma;
  double delta = 1.0;
  /// K(x, y) / sqrt(K(x, x) K(y, y)), in (0, 1], 1 for identical sequences; raw K shrinks with length.
  bool normalized = true;
  at::Tensor x_lengths, y_lengths;  ///< optional int [B] (both or neither)
};

/// GAK of `x` [B, N, D] (or [N, D]) and `y` [B, M, D] with phi the squared Euclidean distance.
at::Tensor gak(const at::Tensor& x, const at::Tensor& y, const GakOptions& options = {});

/// GAK from precomputed local costs phi: `xy` [B, N, M]; `xx` [B, N, N] and `yy` [B, M, M] only
/// for the normalised form (undefined otherwise).
at::Tensor gak_from_cost(const at::Tensor& xy, const at::Tensor& xx, const at::Tensor& yy,
                         const GakOptions& options = {});

/// Sugar's triple kernel as a local cost [B, N, M]: each slice is two blocks, compared after L2
/// normalisation by squared distance; two slices of one modality compare their first blocks
/// (image-only or text-only encoder), an image and a text their second (the shared CLIP space).
/// first: [B, N, Df] (zero-pad the narrower modality: padding leaves the distances unchanged),
/// second: [B, N, Ds], is_image: bool [B, N]; likewise for y.
at::Tensor triple_kernel_cost(const at::Tensor& x_first, const at::Tensor& x_second, const at::Tensor& x_is_image,
                              const at::Tensor& y_first, const at::Tensor& y_second, const at::Tensor& y_is_image);

}  // namespace tessera::ops
