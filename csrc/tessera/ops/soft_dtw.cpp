// Argument checks, device dispatch and the autograd function of ops::soft_dtw.
#include "tessera/ops/soft_dtw.h"

#include "tessera/ops/sequence_lengths.h"

#include "tessera/ops/soft_dtw_kernels.h"

#include <ATen/ATen.h>

#include <limits>
#include <torch/csrc/autograd/custom_function.h>

namespace tessera::ops {
namespace detail {

SoftDtwCuda& soft_dtw_cuda() {
  static SoftDtwCuda kernels;
  return kernels;
}

}  // namespace detail

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct Kernels {
  detail::SoftDtwForward forward;
  detail::SoftDtwBackward backward;
};

Kernels kernels_for(const at::Tensor& cost) {
  if (cost.is_cuda()) {
    const auto& cuda = detail::soft_dtw_cuda();
    TORCH_CHECK(cuda.forward, "soft_dtw: this tessera library was built without CUDA; move the cost to the CPU");
    return {cuda.forward, cuda.backward};
  }
  TORCH_CHECK(cost.is_cpu(), "soft_dtw: cost must be on the CPU or a CUDA device, got ", cost.device());
  return {detail::soft_dtw_forward_cpu, detail::soft_dtw_backward_cpu};
}

class SoftDtwFunction : public torch::autograd::Function<SoftDtwFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& cost, double gamma, const at::Tensor& n,
                            const at::Tensor& m) {
    detail::SoftDtwTables keep;
    at::Tensor out;
    {
      at::NoGradGuard no_grad;
      out = kernels_for(cost).forward(cost.contiguous(), gamma, n, m, keep);
    }
    ctx->save_for_backward({keep.cost, keep.r, n, m});
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["N"] = cost.size(1);
    ctx->saved_data["M"] = cost.size(2);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The expected-alignment backward is not itself differentiable: with create_graph the gradient
    // came back without a graph, and a gradient penalty or gradgradcheck silently got zero.
    TORCH_CHECK_VALUE(!at::GradMode::is_enabled(),
                      "soft_dtw (and gak) have no second derivative: differentiate them once, without "
                      "create_graph=True");
    const auto saved = ctx->get_saved_variables();
    detail::SoftDtwTables keep{saved[0], saved[1]};
    at::Tensor grad = kernels_for(saved[1]).backward(keep, ctx->saved_data["gamma"].toDouble(), saved[2], saved[3],
                                                     grads[0].contiguous(), ctx->saved_data["N"].toInt(),
                                                     ctx->saved_data["M"].toInt());
    return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor soft_dtw(const at::Tensor& cost, double gamma, const at::Tensor& x_lengths, const at::Tensor& y_lengths) {
  TORCH_CHECK_VALUE(cost.defined(), "soft_dtw: cost is undefined");
  TORCH_CHECK_VALUE(cost.dim() == 2 || cost.dim() == 3, "soft_dtw: cost must be [B, N, M] or [N, M], got shape ",
                    cost.sizes());
  TORCH_CHECK_TYPE(cost.scalar_type() == at::kFloat || cost.scalar_type() == at::kDouble,
                   "soft_dtw: cost must be float32 or float64, got ", cost.scalar_type(),
                   " (cast a half-precision cost up: the recursion sums N + M terms)");
  TORCH_CHECK_VALUE(x_lengths.defined() == y_lengths.defined(),
                    "soft_dtw: give both x_lengths and y_lengths, or neither");
  // Before the value checks below, whose host reads fail on a meta tensor without a name.
  TORCH_CHECK_VALUE(cost.is_cpu() || cost.is_cuda(), "soft_dtw: cost must be on the CPU or a CUDA device, got ",
                    cost.device());
  const bool single = cost.dim() == 2;
  at::Tensor c = single ? cost.unsqueeze(0) : cost;
  const int64_t B = c.size(0), N = c.size(1), M = c.size(2);
  // One range, in the cost's own precision: below its smallest normal, cost / gamma overflows to
  // inf and the soft minimum to NaN; above max / (2 (N + M)), gamma times the log of the path count
  // (<= 1.1 (N + M)) does. 0 is hard DTW; NaN and negatives fail both comparisons.
  const bool fp32 = cost.scalar_type() == at::kFloat;
  const double tiny = fp32 ? std::numeric_limits<float>::min() : std::numeric_limits<double>::min();
  const double huge = (fp32 ? std::numeric_limits<float>::max() : std::numeric_limits<double>::max()) /
                      (2.0 * static_cast<double>(N + M));
  TORCH_CHECK_VALUE(gamma == 0 || (gamma >= tiny && gamma <= huge),
                    "soft_dtw: gamma must be 0 (hard DTW) or a normal positive number that a ", cost.scalar_type(),
                    " cost of ", N, " x ", M, " can carry, in [", tiny, ", ", huge, "]; got ", gamma);
  TORCH_CHECK_VALUE(N >= 1 && M >= 1, "soft_dtw: both sequences need at least one step, got cost shape ",
                    cost.sizes());
  TORCH_CHECK_VALUE(!single || !x_lengths.defined(), "soft_dtw: lengths need a batched [B, N, M] cost");
  const at::Tensor n = checked_lengths(x_lengths, B, N, "soft_dtw", "x_lengths", cost);
  const at::Tensor m = checked_lengths(y_lengths, B, M, "soft_dtw", "y_lengths", cost);
  if (x_lengths.defined()) c = zero_past(zero_past(c, n, 1), m, 2);  // padding is never read
  if (B > 0) {
    // A path sums up to N + M entries: beyond `huge` its sum overflows to inf, and a cell whose
    // predecessors are all inf takes inf - inf = NaN, which spreads to cells a finite path reaches.
    const at::Tensor bad = (c.detach().abs() <= huge).logical_not();  // NaN too
    if (bad.any().item<bool>()) {
      const at::Tensor where = bad.nonzero()[0];
      const int64_t i = where[0].item<int64_t>(), j = where[1].item<int64_t>(), k = where[2].item<int64_t>();
      TORCH_CHECK_VALUE(false, "soft_dtw: cost[", i, ", ", j, ", ", k, "] is ", c[i][j][k].item<double>(),
                        "; entries must be finite and at most ", huge, " in magnitude for a ", N, " x ", M, " ",
                        cost.scalar_type(), " cost, so that no path's sum overflows (a forbidden cell needs a "
                        "large cost within that bound, not inf or the dtype's max)");
    }
  }
  if (B == 0) return at::zeros({0}, cost.options()) + c.sum({1, 2});  // keeps the graph for empty batches
  at::Tensor out = SoftDtwFunction::apply(c, gamma, n, m);
  return single ? out.squeeze(0) : out;
}

}  // namespace tessera::ops
