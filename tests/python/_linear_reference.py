"""The plain formula for x W^T + b in float64, and the bound a kernel's fp32 sum must meet."""
import torch


def reference(x, w, b=None):
    y = x.double() @ w.double().T
    return y if b is None else y + b.double()


def assert_fp32_sum(y, x, w, b=None):
    """Within fp32 rounding of the sum: 1e-6 of the sum of |terms| (the order of a sum of
    hundreds of products is the kernel's, not LibTorch's)."""
    bound = 1e-6 * (x.abs().double() @ w.abs().double().T + (0 if b is None else b.abs().double())) + 1e-7
    assert bool(((y.double() - reference(x, w, b)).abs() <= bound).all())
