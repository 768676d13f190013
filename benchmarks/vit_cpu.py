"""ViT-B/16 image tower on CPU: tessera vs torchvision vit_b_16, timm vit_base_patch16_224 and
transformers' CLIPVisionModel (sdpa), same run, batch 8, all cores, fp32 and bf16.
Prints images/s, ratios, and achieved GFLOP/s against a measured fp32 matmul peak.

    .venv/bin/python benchmarks/vit_cpu.py [--batch 8] [--iters 10]
"""
import argparse
import os
import time

import torch

import tessera

D, N, L, MLP = 768, 197, 12, 3072


def vit_b16_flops(batch: int) -> float:
    per_layer = 2 * N * D * (4 * D) + 2 * 2 * N * N * D + 2 * 2 * N * D * MLP
    patch = 2 * 196 * (3 * 16 * 16) * D
    return batch * (L * per_layer + patch)


def timed(fn, iters: int, warmup: int = 2) -> float:
    """Best wall time of `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(dtype) -> float:
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    sec = timed(lambda: a @ b, 5)
    return 2 * 2048**3 / sec / 1e9


def models():
    import timm
    import torchvision
    from transformers import CLIPVisionConfig
    from transformers import CLIPVisionModel as HFVision

    cfg = tessera.get_model_config("ViT-B-16")["vision_config"]
    out = {"tessera": tessera.CLIPVisionModel(cfg)}
    out["torchvision"] = torchvision.models.vit_b_16(weights=None)
    out["timm"] = timm.create_model("vit_base_patch16_224", pretrained=False)
    hf_cfg = CLIPVisionConfig(**{k: v for k, v in cfg.items() if k != "model_type"}, attn_implementation="sdpa")
    out["transformers"] = HFVision(hf_cfg)
    return {k: m.eval() for k, m in out.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, torch {torch.__version__}")
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    x = torch.randn(args.batch, 3, 224, 224)
    flops = vit_b16_flops(args.batch)
    import copy

    cases = {}
    for name, m in models().items():
        cases[(name, "fp32")] = (m, x)
        cases[(name, "bf16")] = (copy.deepcopy(m).to(torch.bfloat16), x.to(torch.bfloat16))
    # Round-robin: every case is timed once per round, best of all rounds, so frequency drift
    # and other load on the machine hit every model alike.
    best = {k: float("inf") for k in cases}
    with torch.inference_mode():
        for m, xx in cases.values():
            m(xx)
        for _ in range(args.iters):
            for k, (m, xx) in cases.items():
                t = time.perf_counter()
                m(xx)
                best[k] = min(best[k], time.perf_counter() - t)
    rates = {}
    for (name, prec), sec in best.items():
        rates[(name, prec)] = args.batch / sec
        gf = flops / sec / 1e9
        peak = peak32 if prec == "fp32" else peak16
        print(f"{name:13s} {prec}: {args.batch / sec:7.2f} img/s  {gf:6.0f} GFLOP/s ({100 * gf / peak:.0f}% of matmul peak)")
    refs = [k for k in rates if k[0] != "tessera" and k[1] == "fp32"]
    fastest = max(refs, key=lambda k: rates[k])
    print(f"\nfastest reference fp32: {fastest[0]} {rates[fastest]:.2f} img/s")
    print(f"ratio tessera fp32 / fastest fp32: {rates[('tessera', 'fp32')] / rates[fastest]:.2f}x (goal >= 1.2x)")
    print(f"ratio tessera bf16 / fastest fp32: {rates[('tessera', 'bf16')] / rates[fastest]:.2f}x (goal >= 1.8x)")
    for name in ("torchvision", "timm", "transformers"):
        print(f"  tessera/{name}: fp32 {rates[('tessera', 'fp32')] / rates[(name, 'fp32')]:.2f}x, "
              f"bf16 {rates[('tessera', 'bf16')] / rates[(name, 'bf16')]:.2f}x")


if __name__ == "__main__":
    main()
