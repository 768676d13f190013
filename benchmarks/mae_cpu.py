"""MAE pretraining step on CPU (ViT-B/16, 224 px, mask ratio 0.75), same run:
1. tessera's encoder on the visible patches (MAE) vs the same encoder on all patches (goal >= 2.5x);
2. tessera's full step (forward, loss, backward, AdamW) vs transformers' ViTMAEForPreTraining with
   the same weights, fp32 (goal: no slower) and bf16 autocast where the CPU has native bf16.

    .venv/bin/python benchmarks/mae_cpu.py [--batch 4] [--iters 2]
"""
import argparse
import os
import sys
import tempfile

import torch

import tessera
from tessera.train.hardware import cpu_has_native_bf16

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_compare import compare_steps  # noqa: E402
from vit_cpu import timed  # noqa: E402


def best_of(fn, iters):
    return timed(fn, iters, warmup=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    import transformers

    config = tessera.get_model_config("mae-vit-base-patch16")
    ours = tessera.ViTMAEForPreTraining(config).train()
    px = torch.randn(args.batch, 3, 224, 224)
    noise = torch.rand(args.batch, 196)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, ViT-B/16 MAE, native bf16: {cpu_has_native_bf16()}")

    # 1. The encoder on 49 visible patches vs all 196 (mask_ratio 0: every patch kept).
    encoder = {k[len("vit."):]: v for k, v in ours.state_dict().items() if k.startswith("vit.")}
    visible, full = (tessera.ViTMAEModel({**config, "mask_ratio": r}).train() for r in (0.75, 0.0))
    for m in (visible, full):
        m.load_state_dict(encoder)

    def enc(model):
        return lambda: model(px, noise=noise).last_hidden_state.sum().backward()
    t_vis, t_all = best_of(enc(visible), args.iters), best_of(enc(full), args.iters)
    print(f"encoder fwd+bwd: visible patches {t_vis * 1e3:.0f} ms, all patches {t_all * 1e3:.0f} ms: "
          f"{t_all / t_vis:.2f}x (goal >= 2.5x)")

    # 2. Full step against transformers with the same weights.
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        hf = transformers.ViTMAEForPreTraining.from_pretrained(d, attn_implementation="sdpa").train()
    compare_steps({"tessera": ours, "transformers": hf}, lambda m: m(px, noise=noise).loss, args.batch, args.iters)

if __name__ == "__main__":
    main()
