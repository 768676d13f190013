"""BEiT pretraining step on CPU (BEiT-B/16, 224 px, shared relative position bias, layer scale,
8192 visual tokens, 75 of 196 patches block-masked): tessera's BeitForMaskedImageModeling vs
transformers' with the same weights, same run; fp32 (goal: no slower) and bf16 autocast where the
CPU has native bf16.

    .venv/bin/python benchmarks/beit_cpu.py [--batch 4] [--iters 2]
"""
import argparse
import os
import sys
import tempfile

import torch

import tessera
from tessera.data import BlockMaskGenerator
from tessera.train.hardware import cpu_has_native_bf16

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_compare import compare_steps  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    import transformers

    # drop_path 0: both sides then compute the same function (stochastic depth draws differ).
    config = {**tessera.get_model_config("beit-base-patch16-224-pt22k"), "drop_path_rate": 0.0}
    ours = tessera.BeitForMaskedImageModeling(config).train()
    px = torch.randn(args.batch, 3, 224, 224)
    mask = BlockMaskGenerator(14, 75, seed=0)(args.batch)
    labels = torch.randint(0, 8192, (args.batch, 196))[mask]
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, BEiT-B/16, native bf16: {cpu_has_native_bf16()}")
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        hf = transformers.BeitForMaskedImageModeling.from_pretrained(d, attn_implementation="sdpa").train()
    with torch.no_grad():
        diff = (ours(px, bool_masked_pos=mask).logits - hf(px, bool_masked_pos=mask).logits).abs().max()
    print(f"same function: max |logits difference| {float(diff):.2e}")
    compare_steps({"tessera": ours, "transformers": hf},
                  lambda m: m(px, bool_masked_pos=mask, labels=labels).loss, args.batch, args.iters)


if __name__ == "__main__":
    main()
