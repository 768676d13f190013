"""Reduced-precision attention on CPU: torch's SDPA in bf16/fp16 (what transformers, timm and
open_clip run under autocast or `.to(torch.bfloat16)`) against `tessera.ops.attention`, which
computes such calls in fp32 where `tessera.ops.cpu_attention_in_fp32.applies`; same inputs, same
run, interleaved rounds. Prints the CPU's features, then per shape forward+backward (and, for
fp16, forward alone) ms and the ratio torch time / tessera time (> 1: tessera faster).

    .venv/bin/python benchmarks/attention_precision_cpu.py [--rounds 5]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import tessera.ops
from onednn_linear import cpu_description

# (what, batch, heads, queries, keys, causal): the models' own shapes at their training batches.
SHAPES = [
    ("CLIP ViT-B/32 image, batch 16", 16, 12, 50, 50, False),
    ("CLIP text, 77 tokens, batch 16", 16, 8, 77, 77, True),
    ("ViT-B/16, batch 8", 8, 12, 197, 197, False),
    ("Q-Former cross-attention, batch 8", 8, 12, 32, 257, False),
    ("LM, 512 tokens, batch 4", 4, 16, 512, 512, True),
]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def step(attend, q, k, v, g, causal, grad):
    def run():
        if not grad:
            with torch.no_grad():
                attend(q, k, v, causal)
            return
        for t in (q, k, v):
            t.grad = None
        attend(q, k, v, causal).backward(g)
    return run


def torch_sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def tessera_attention(q, k, v, causal):
    return tessera.ops.attention(q, k, v, causal=causal)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads, {cpu_description()}; median of {args.rounds} interleaved rounds")
    print("| shape | dtype | pass | torch SDPA ms | tessera ms | ratio | rule |")
    print("|---|---|---|---|---|---|---|")
    for what, b, h, nq, nk, causal in SHAPES:
        for dtype in (torch.bfloat16, torch.float16):
            for grad in (True, False) if dtype == torch.float16 else (True,):
                q = torch.randn(b, h, nq, 64).to(dtype).requires_grad_(grad)
                k, v = (torch.randn(b, h, nk, 64).to(dtype).requires_grad_(grad) for _ in range(2))
                g = torch.randn(b, h, nq, 64).to(dtype)
                runs = {name: step(fn, q, k, v, g, causal, grad)
                        for name, fn in (("torch", torch_sdpa), ("tessera", tessera_attention))}
                for run in runs.values():
                    run()  # warm-up
                times = {name: [] for name in runs}
                for _ in range(args.rounds):
                    for name, run in runs.items():
                        times[name].append(timed(run))
                ref, ours = (statistics.median(times[n]) * 1e3 for n in ("torch", "tessera"))
                with torch.set_grad_enabled(grad):
                    rule = tessera.ops.cpu_attention_in_fp32.applies(q, k, v)
                print(f"| {what} | {str(dtype)[6:]} | {'fwd+bwd' if grad else 'fwd'} | {ref:.1f} | {ours:.1f} | "
                      f"**{ref / ours:.2f}×** | {'fp32' if rule else 'own dtype'} |")


if __name__ == "__main__":
    main()
