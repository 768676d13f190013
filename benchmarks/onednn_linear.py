"""fp32 linear layers on CPU: torch's eager linear (MKL's GEMM) against oneDNN's (LibTorch's
`mkldnn::_linear_pointwise`, what tessera's layers use for fp32 inference where
`tessera.ops.onednn_linear.applies`), same inputs, same run, interleaved. Prints the CPU's
vendor and features, then per weight shape and row count the ratio torch time / oneDNN time
(> 1: oneDNN faster) and whether tessera's rule takes oneDNN there.

    .venv/bin/python benchmarks/onednn_linear.py [--repeats 3]
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

import tessera.ops

SHAPES = [(128, 512), (256, 1024), (512, 512), (768, 768), (768, 3072), (3072, 768), (1408, 768), (2048, 2048)]
ROWS = [1, 8, 32, 64, 128, 256, 512, 2048]


def cpu_description() -> str:
    from tessera.train.hardware import cpu_flags, cpu_vendor

    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in cpu_flags()]
    return f"{cpu_vendor() or '?'}, {' '.join(shown) or 'no AVX flags read'}"


def quartile_time(fn, n: int = 12) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 4]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3, help="interleaved A/B rounds per cell (median ratio)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, CPU: {cpu_description()}")
    print("torch linear time / oneDNN time per (in x out) weight and rows; * = tessera takes oneDNN there")
    print(f"{'in x out':>12s} " + " ".join(f"{'M=' + str(m):>8s}" for m in ROWS))
    with torch.no_grad():
        for k, n in SHAPES:
            g = torch.Generator().manual_seed(k * n)
            w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
            cells = []
            for m in ROWS:
                x = torch.randn(m, k, generator=g)
                ratios = []
                for _ in range(args.repeats):
                    a = quartile_time(lambda: F.linear(x, w, b))
                    o = quartile_time(lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""))
                    ratios.append(a / o)
                mark = "*" if tessera.ops.onednn_linear.applies(x, w, b) else " "
                cells.append(f"{statistics.median(ratios):7.2f}{mark}")
            print(f"{k:>5d} x {n:<5d} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
