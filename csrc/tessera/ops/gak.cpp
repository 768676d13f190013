#include "tessera/ops/gak.h"

#include "tessera/ops/sequence_lengths.h"
#include "tessera/ops/soft_dtw.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace tessera::ops {
namespace {

at::Tensor batched(const at::Tensor& t, int64_t dims, const char* fn, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.dim() == dims || t.dim() == dims - 1, fn, ": ", name, " must have ", dims, " (batched) or ",
                    dims - 1, " dimensions, got shape ", t.sizes());
  return t.dim() == dims ? t : t.unsqueeze(0);
}

/// A float32/float64 cost without NaN or inf, >= 0 (a squared distance). An integer cost would
/// make the bandwidth an integer too (sigma 1.5 silently 1).
void check_cost(const at::Tensor& c, const char* name) {
  TORCH_CHECK_TYPE(c.scalar_type() == at::kFloat || c.scalar_type() == at::kDouble, "gak: ", name,
                   " must be float32 or float64, got ", c.scalar_type());
  const at::Tensor d = c.detach();
  // One reduction (one host sync); which rule failed is told only when one did.
  if ((d >= 0).logical_and(d.isfinite()).all().item<bool>()) return;
  TORCH_CHECK_VALUE(d.isfinite().all().item<bool>(), "gak: ", name, " has a non-finite entry (NaN or inf)");
  TORCH_CHECK_VALUE(false, "gak: ", name, " must be >= 0 (squared distances)");
}

/// The bandwidth of each pair: fixed, or delta * sqrt((n + m) / 2).
at::Tensor bandwidth(const at::Tensor& n, const at::Tensor& m, const GakOptions& o, const at::TensorOptions& opts) {
  at::Tensor sigma;
  if (o.sigma) {
    TORCH_CHECK_VALUE(*o.sigma > 0 && std::isfinite(*o.sigma), "gak: sigma must be > 0, got ", *o.sigma);
    sigma = at::full({n.size(0)}, *o.sigma, opts.dtype(at::kDouble)).to(opts);
  } else {
    TORCH_CHECK_VALUE(o.delta > 0 && std::isfinite(o.delta), "gak: delta must be > 0, got ", o.delta);
    sigma = o.delta * ((n + m).to(opts.dtype()) / 2).sqrt();
  }
  // 2 sigma^2 divides every squared distance: it must be a positive finite number in the features'
  // precision (1e300 failed in at::full's conversion, a delta of 1e300 gave inf silently).
  const at::Tensor twice_square = 2 * sigma.square();
  TORCH_CHECK_VALUE(sigma.numel() == 0 || (twice_square.isfinite().all().item<bool>() &&
                                           (twice_square > 0).all().item<bool>()),
                    "gak: the bandwidth (", o.sigma ? "sigma " : "delta ", o.sigma ? *o.sigma : o.delta,
                    ") gives 2 sigma^2 outside what ", opts.dtype(), " features can carry");
  return sigma;
}

/// -log K for one set of pairs: soft_dtw(gamma = 1) over phi_sigma.
at::Tensor neg_log_gak(const at::Tensor& phi, const at::Tensor& sigma, const at::Tensor& n, const at::Tensor& m,
                       bool lengths_given) {
  const at::Tensor scaled = phi / (2 * sigma.square()).view({-1, 1, 1});
  // A bandwidth small against the distances overflows phi / 2 sigma^2; said here, not as
  // soft_dtw's "non-finite cost" (the caller passed no cost).
  TORCH_CHECK_VALUE(scaled.numel() == 0 || scaled.isfinite().all().item<bool>(),
                    "gak: the bandwidth is too small for these features: phi / (2 sigma^2) overflows; use a larger "
                    "sigma or delta");
  // log(2 - e^-s) with e^-s in (0, 1]: log1p(1 - e^-s) = log1p(-expm1(-s)), exact for small s.
  const at::Tensor phi_sigma = scaled + at::log1p(-at::expm1(-scaled));
  return lengths_given ? soft_dtw(phi_sigma, 1.0, n, m) : soft_dtw(phi_sigma, 1.0);
}

/// |a_i/|a_i| - b_j/|b_j||^2 for each (batch, i, j) row of `near` [P, 3], summed directly in
/// float64 (no cancellation), F.normalize's clamp on the norms. On the CPU a loop without
/// temporaries: gathering the pairs as [P, D] tensors made the allocator keep ~1.6 GB for 262K
/// pairs of 768 wide. Other devices gather in chunks.
at::Tensor near_distances(const at::Tensor& a, const at::Tensor& b, const at::Tensor& near) {
  const int64_t P = near.size(0);
  if (!a.is_cpu()) {
    const at::Tensor bi = near.select(1, 0), i = near.select(1, 1), j = near.select(1, 2);
    auto unit64 = [](const at::Tensor& t) {
      const at::Tensor d = t.to(at::kDouble);
      return d / d.norm(2, -1, true).clamp_min(1e-12);
    };
    std::vector<at::Tensor> parts;
    for (int64_t s = 0; s < P; s += 2048) {
      const int64_t e = std::min(s + 2048, P);
      parts.push_back((unit64(a.index({bi.slice(0, s, e), i.slice(0, s, e)})) -
                       unit64(b.index({bi.slice(0, s, e), j.slice(0, s, e)})))
                          .square()
                          .sum(-1));
    }
    return at::cat(parts);
  }
  const at::Tensor ac = a.contiguous(), bc = b.contiguous(), idx = near.contiguous();
  const at::Tensor na = ac.to(at::kDouble).norm(2, -1).clamp_min(1e-12).contiguous();
  const at::Tensor nb = bc.to(at::kDouble).norm(2, -1).clamp_min(1e-12).contiguous();
  const int64_t N = ac.size(1), M = bc.size(1), D = ac.size(2);
  at::Tensor out = at::empty({P}, ac.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, ac.scalar_type(), "triple_kernel_cost", [&] {
    const scalar_t* A = ac.data_ptr<scalar_t>();
    const scalar_t* B = bc.data_ptr<scalar_t>();
    const double* NA = na.data_ptr<double>();
    const double* NB = nb.data_ptr<double>();
    const int64_t* I = idx.data_ptr<int64_t>();
    double* O = out.data_ptr<double>();
    at::parallel_for(0, P, 64, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t row = I[3 * p] * N + I[3 * p + 1], col = I[3 * p] * M + I[3 * p + 2];
        const scalar_t* x = A + row * D;
        const scalar_t* y = B + col * D;
        const double sx = 1.0 / NA[row], sy = 1.0 / NB[col];
        double sum = 0;
        for (int64_t k = 0; k < D; ++k) {
          const double t = static_cast<double>(x[k]) * sx - static_cast<double>(y[k]) * sy;
          sum += t * t;
        }
        O[p] = sum;
      }
    });
  });
  return out;
}
}  // namespace

at::Tensor gak_from_cost(const at::Tensor& xy_in, const at::Tensor& xx_in, const at::Tensor& yy_in,
                         const GakOptions& o) {
  const bool single = xy_in.defined() && xy_in.dim() == 2;
  at::Tensor xy = batched(xy_in, 3, "gak", "the x-y cost");
  // Before the value checks, whose host reads fail on a meta tensor without a name.
  TORCH_CHECK_VALUE(xy.is_cpu() || xy.is_cuda(), "gak: the cost must be on the CPU or a CUDA device, got ", xy.device());
  TORCH_CHECK_VALUE(o.x_lengths.defined() == o.y_lengths.defined(), "gak: give both x_lengths and y_lengths, or neither");
  const int64_t B = xy.size(0), N = xy.size(1), M = xy.size(2);
  TORCH_CHECK_VALUE(N >= 1 && M >= 1, "gak: both sequences need at least one step, got ", N, " and ", M, " steps");
  const bool given = o.x_lengths.defined();
  const at::Tensor n = checked_lengths(o.x_lengths, B, N, "gak", "x_lengths", xy);
  const at::Tensor m = checked_lengths(o.y_lengths, B, M, "gak", "y_lengths", xy);
  // Padding (past each pair's lengths) may hold anything: zeroed before any check, never read.
  auto inside = [&](const at::Tensor& c, const at::Tensor& rows, const at::Tensor& cols) {
    return given ? zero_past(zero_past(c, rows, 1), cols, 2) : c;
  };
  xy = inside(xy, n, m);
  check_cost(xy, "the x-y cost");
  // K(x, x) and K(y, y) take the x-y pair's sigma: one local kernel for all three keeps the
  // normalised value a cosine in the kernel's feature space, hence <= 1.
  const at::Tensor sigma = bandwidth(n, m, o, xy.options());
  at::Tensor log_k = -neg_log_gak(xy, sigma, n, m, given);
  if (o.normalized) {
    at::Tensor xx = batched(xx_in, 3, "gak", "the x-x cost (normalized=True needs it)");
    at::Tensor yy = batched(yy_in, 3, "gak", "the y-y cost (normalized=True needs it)");
    TORCH_CHECK_VALUE(xx.size(0) == B && xx.size(1) == N && xx.size(2) == N, "gak: the x-x cost must be [", B, ", ",
                      N, ", ", N, "], got shape ", xx.sizes());
    TORCH_CHECK_VALUE(yy.size(0) == B && yy.size(1) == M && yy.size(2) == M, "gak: the y-y cost must be [", B, ", ",
                      M, ", ", M, "], got shape ", yy.sizes());
    TORCH_CHECK_TYPE(xx.scalar_type() == xy.scalar_type() && yy.scalar_type() == xy.scalar_type(),
                     "gak: the x-x and y-y costs must have the x-y cost's dtype ", xy.scalar_type(), ", got ",
                     xx.scalar_type(), " and ", yy.scalar_type());
    xx = inside(xx, n, n);
    yy = inside(yy, m, m);
    check_cost(xx, "the x-x cost");
    check_cost(yy, "the y-y cost");
    log_k = log_k + 0.5 * (neg_log_gak(xx, sigma, n, n, given) + neg_log_gak(yy, sigma, m, m, given));
  }
  const at::Tensor k = log_k.exp();
  return single ? k.squeeze(0) : k;
}

at::Tensor gak(const at::Tensor& x_in, const at::Tensor& y_in, const GakOptions& o) {
  TORCH_CHECK_VALUE(x_in.defined() && y_in.defined(), "gak: x and y must be defined");
  TORCH_CHECK_VALUE(x_in.dim() == y_in.dim(), "gak: x and y must both be [B, len, dim] or both [len, dim], got shapes ",
                    x_in.sizes(), " and ", y_in.sizes());
  at::Tensor x = batched(x_in, 3, "gak", "x"), y = batched(y_in, 3, "gak", "y");
  TORCH_CHECK_VALUE(x.is_cpu() || x.is_cuda(), "gak: x must be on the CPU or a CUDA device, got ", x.device());
  for (const at::Tensor* t : {&x, &y})
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat || t->scalar_type() == at::kDouble,
                     "gak: x and y must be float32 or float64, got ", x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK_VALUE(x.size(0) == y.size(0) && x.size(2) == y.size(2),
                    "gak: x and y need the same batch size and feature width, got shapes ", x.sizes(), " and ",
                    y.sizes());
  // Exact pairwise squared distances. A non-finite one is told here, naming x or y: gak_from_cost
  // would blame "the x-y cost", which the caller never passed. (The features are read only then.)
  auto sq = [&](const at::Tensor& a, const at::Tensor& b, const char* name) {
    at::Tensor d = (a.unsqueeze(2) - b.unsqueeze(1)).square().sum(-1);
    if (d.detach().isfinite().all().item<bool>()) return d;
    for (const auto& [t, which] : {std::pair{x, "x"}, {y, "y"}})
      TORCH_CHECK_VALUE(t.detach().isfinite().all().item<bool>(), "gak: ", which, " has a non-finite entry (NaN or inf)");
    TORCH_CHECK_VALUE(false, "gak: the squared distances of ", name, " overflow ", d.scalar_type(),
                      " (features this large need float64, or scaling)");
    return d;
  };
  if (o.x_lengths.defined() && o.y_lengths.defined()) {  // NaN padding (tslearn's) would give 0 * NaN gradients
    x = zero_past(x, checked_lengths(o.x_lengths, x.size(0), x.size(1), "gak", "x_lengths", x), 1);
    y = zero_past(y, checked_lengths(o.y_lengths, y.size(0), y.size(1), "gak", "y_lengths", y), 1);
  }
  at::Tensor k = gak_from_cost(sq(x, y, "x and y"), o.normalized ? sq(x, x, "x") : at::Tensor(),
                               o.normalized ? sq(y, y, "y") : at::Tensor(), o);
  return x_in.dim() == 2 ? k.squeeze(0) : k;
}

at::Tensor triple_kernel_cost(const at::Tensor& x_first, const at::Tensor& x_second, const at::Tensor& x_is_image,
                              const at::Tensor& y_first, const at::Tensor& y_second, const at::Tensor& y_is_image) {
  const char* fn = "triple_kernel_cost";
  const at::Tensor xf = batched(x_first, 3, fn, "x_first"), xs = batched(x_second, 3, fn, "x_second");
  const at::Tensor yf = batched(y_first, 3, fn, "y_first"), ys = batched(y_second, 3, fn, "y_second");
  const at::Tensor xi = batched(x_is_image, 2, fn, "x_is_image"), yi = batched(y_is_image, 2, fn, "y_is_image");
  const int64_t B = xf.size(0), N = xf.size(1), M = yf.size(1);
  auto check = [&](const at::Tensor& t, int64_t len, int64_t width, const char* name) {
    TORCH_CHECK_VALUE(t.size(0) == B && t.size(1) == len && (width < 0 || t.size(2) == width), fn, ": ", name,
                      " has shape ", t.sizes(), ", expected [", B, ", ", len, width < 0 ? "" : ", ",
                      width < 0 ? "" : std::to_string(width), "]");
  };
  check(xs, N, -1, "x_second");
  check(yf, M, xf.size(2), "y_first");
  check(ys, M, xs.size(2), "y_second");
  check(xi, N, -1, "x_is_image");
  check(yi, M, -1, "y_is_image");
  // One floating dtype and one device for the four feature blocks (a meta block beside CPU ones
  // returned garbage; mixed or integer dtypes failed in matmul or norm without a name).
  for (const auto& [t, name] : {std::pair{xs, "x_second"}, {yf, "y_first"}, {ys, "y_second"}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == xf.scalar_type() && t.device() == xf.device(), fn, ": ", name, " is ",
                     t.scalar_type(), " on ", t.device(), ", x_first ", xf.scalar_type(), " on ", xf.device(),
                     ": the feature blocks need one dtype and device");
  }
  TORCH_CHECK_TYPE(at::isFloatingType(xf.scalar_type()), fn, ": features must be floating point, got ",
                   xf.scalar_type());
  for (const auto& [t, name] : {std::pair{xi, "x_is_image"}, {yi, "y_is_image"}}) {
    TORCH_CHECK_TYPE(t.device() == xf.device(), fn, ": ", name, " is on ", t.device(), ", the features on ",
                     xf.device());
    // 0.5 or NaN read as "image" (any non-zero did): a mask is bool, or integers 0 and 1.
    TORCH_CHECK_TYPE(t.scalar_type() == at::kBool || at::isIntegralType(t.scalar_type(), false), fn, ": ", name,
                     " must be a bool (or 0/1 integer) tensor, got ", t.scalar_type());
    TORCH_CHECK_VALUE(t.scalar_type() == at::kBool || t.is_meta() || t.numel() == 0 ||
                          (t == 0).logical_or(t == 1).all().item<bool>(),
                      fn, ": ", name, " holds values other than 0 and 1");
  }
  // F.normalize's rule: a zero vector stays zero (distance 1 to a unit vector, 0 to a zero one).
  auto unit = [](const at::Tensor& t, const at::Tensor& norm) { return t / norm.clamp_min(1e-12); };
  auto dist = [&](const at::Tensor& a, const at::Tensor& b) {
    // Every pair by one matmul, as Sugar's targets need for hundreds of slices at once. |unit(a)|^2
    // is 1, or below it for a block whose norm is under the clamp (0 for a zero block).
    const at::Tensor na = a.norm(2, -1, true), nb = b.norm(2, -1, true);
    auto squared = [](const at::Tensor& n) { return (n / n.clamp_min(1e-12)).square().squeeze(-1); };
    at::Tensor d = (squared(na).unsqueeze(2) + squared(nb).unsqueeze(1) -
                    2 * at::matmul(unit(a, na), unit(b, nb).transpose(1, 2)))
                       .clamp_min(0);
    if (d.is_meta() || d.numel() == 0) return d;
    // Below 1e-2 the matmul's rounding (~1e-7 of the unit scale in float32) is a visible part of
    // a distance (2 - 2 a.b read 1e-8 as 0): those pairs are summed directly in float64, outside
    // autograd. Their gradient stays the matmul's, equal in exact arithmetic (a unit vector's
    // Jacobian projects itself out) but carrying its rounding: in float32, ~1e-3 relative at a
    // distance of 1e-8, and 0 where the matmul rounds to 0 (Sugar's targets take no gradient).
    // Zero blocks are exact already and left out: Sugar's padding makes thousands.
    const at::Tensor near = (d.detach() < 1e-2)
                                .logical_and(na.detach().squeeze(-1).gt(0).unsqueeze(2))
                                .logical_and(nb.detach().squeeze(-1).gt(0).unsqueeze(1))
                                .nonzero();
    if (near.size(0) == 0) return d;
    at::Tensor exact;
    {
      at::NoGradGuard no_grad;
      exact = d.detach().index_put({near.select(1, 0), near.select(1, 1), near.select(1, 2)},
                                   near_distances(a.detach(), b.detach(), near).to(d.scalar_type()));
    }
    return exact + (d - d.detach());  // exact's value rounded once, d's gradient
  };
  const at::Tensor same = xi.to(at::kBool).unsqueeze(2) == yi.to(at::kBool).unsqueeze(1);
  at::Tensor cost = at::where(same, dist(xf, yf), dist(xs, ys));
  return x_first.dim() == 2 ? cost.squeeze(0) : cost;
}

}  // namespace tessera::ops
