"""soft-DTW forward + backward on CPU, fp32, B pairs of N x N cost matrices, against the
implementations a researcher would otherwise use, in one run:

- a cell loop in torch (one autograd op per cell, over the batch),
- a vectorised anti-diagonal torch DP (one op per diagonal, over batch and diagonal),
- pysdtw (numba, CPU path) and tslearn's SoftDTWLossPyTorch (numba), both on the same cost.

Goals: >= 5x the cell loop, >= 2x the anti-diagonal version, >= 1x pysdtw.

    .venv/bin/python benchmarks/soft_dtw.py [--batch 512] [--sizes 16 64 256] [--gamma 0.1]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit_cpu import timed  # noqa: E402


def softmin(a, b, c, gamma):
    return -gamma * torch.logsumexp(torch.stack([a, b, c]) / -gamma, dim=0)


def cell_loop(cost, gamma):
    B, N, M = cost.shape
    inf = torch.full((B,), float("inf"), dtype=cost.dtype)
    R = [[inf] * (M + 1) for _ in range(N + 1)]
    R[0][0] = torch.zeros(B, dtype=cost.dtype)
    for i in range(1, N + 1):
        for j in range(1, M + 1):
            R[i][j] = cost[:, i - 1, j - 1] + softmin(R[i - 1][j - 1], R[i - 1][j], R[i][j - 1], gamma)
    return R[N][M]


def anti_diagonal(cost, gamma):
    """R on anti-diagonals t = i + j, each one batched op over batch and diagonal. The cost is
    skewed once into [B, t, i]; a large finite border instead of inf keeps logsumexp's backward
    free of inf - inf."""
    B, N, M = cost.shape
    big = 1e10
    t = torch.arange(N + M + 1).view(-1, 1)
    i = torch.arange(N + 1).view(1, -1)
    j = t - i
    valid = (i >= 1) & (j >= 1) & (j <= M)
    flat = ((i - 1).clamp(0, N - 1) * M + (j - 1).clamp(0, M - 1)).view(-1)
    skew = torch.where(valid.view(1, -1), cost.reshape(B, -1)[:, flat], torch.full((), big, dtype=cost.dtype))
    diagonals = skew.view(B, N + M + 1, N + 1).unbind(1)  # one backward for all (indexing would make one per step)
    border = torch.full((B, 1), big, dtype=cost.dtype)
    prev2 = torch.cat([torch.zeros(B, 1, dtype=cost.dtype), torch.full((B, N), big, dtype=cost.dtype)], 1)
    prev = torch.full((B, N + 1), big, dtype=cost.dtype)
    for step in range(2, N + M + 1):
        sm = softmin(prev2[:, :-1], prev[:, :-1], prev[:, 1:], gamma)
        cur = torch.cat([border, diagonals[step][:, 1:] + sm], 1)
        prev2, prev = prev, cur
    return prev[:, N]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--cell-loop-max", type=int, default=64, help="largest N for the cell loop (it is slow)")
    a = p.parse_args(argv)

    import pysdtw.sdtw_cpu
    from tslearn.metrics.soft_dtw_loss_pytorch import _SoftDTWLossPyTorch

    import tessera.ops
    from tessera.train.hardware import cpu_flags

    flags = cpu_flags()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"avx2={'avx2' in flags} avx512f={'avx512f' in flags}; B={a.batch}, gamma={a.gamma}, fp32, fwd+bwd")

    def step(fn):
        def run():
            c = cost.clone().requires_grad_()
            fn(c).sum().backward()
        return run

    for n in a.sizes:
        g = torch.Generator().manual_seed(n)
        x, y = torch.randn(a.batch, n, 8, generator=g), torch.randn(a.batch, n, 8, generator=g)
        cost = torch.cdist(x, y).square()
        lengths = torch.full((a.batch, 2), n, dtype=torch.long)
        ours = tessera.ops.soft_dtw(cost, a.gamma)
        ref = pysdtw.sdtw_cpu.SoftDTWcpu.apply(cost, lengths, a.gamma, 0.0)
        err = ((ours - ref).abs() / ref.abs().clamp_min(1)).max().item()
        rows = {
            "tessera": step(lambda c: tessera.ops.soft_dtw(c, a.gamma)),
            "anti-diagonal torch": step(lambda c: anti_diagonal(c, a.gamma)),
            "pysdtw (numba)": step(lambda c: pysdtw.sdtw_cpu.SoftDTWcpu.apply(c, lengths, a.gamma, 0.0)),
            "tslearn (numba)": step(lambda c: _SoftDTWLossPyTorch.apply(c.clone(), a.gamma)),
        }
        if n <= a.cell_loop_max:
            rows["cell-loop torch"] = step(lambda c: cell_loop(c, a.gamma))
        times = {}
        for name, fn in rows.items():
            once = timed(fn, 1, warmup=0)  # the first call also warms up; slow ones run once more
            times[name] = min(once, timed(fn, 1 if once > 2 else a.iters, warmup=0))
        print(f"\nN = M = {n}  (max relative difference to pysdtw {err:.1e})")
        for name, t in times.items():
            ratio = t / times["tessera"]
            print(f"  {name:22s} {t * 1e3:10.1f} ms   tessera is {ratio:6.1f}x faster")


if __name__ == "__main__":
    main()
