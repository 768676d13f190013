"""Training samples/s of one ViT-B/32 CLIP step (forward, contrastive loss, backward, AdamW) on
CPU: tessera vs open_clip vs transformers, same batch, same run, fp32 and bf16 autocast.

    .venv/bin/python benchmarks/clip_train_cpu.py [--batch 16] [--iters 3]
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F

import tessera


def clip_loss(img, txt, scale):
    logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    labels = torch.arange(len(img))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def build(batch):
    import open_clip
    from transformers import CLIPConfig, CLIPModel

    cfg = tessera.get_model_config("ViT-B-32")
    models = {"tessera": tessera.create_model("ViT-B-32")}
    oc = open_clip.create_model("ViT-B-32")
    models["open_clip"] = oc
    hf_cfg = CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                        projection_dim=cfg["projection_dim"], attn_implementation="sdpa")
    models["transformers"] = CLIPModel(hf_cfg)
    return models


def step_fn(name, model, opt, pixels, ids):
    def step():
        if name == "open_clip":
            img, txt, scale = model(pixels, ids)[:3]
            loss = clip_loss(img, txt, scale)
        else:
            out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
            loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    pixels = torch.randn(args.batch, 3, 224, 224)
    ids = tessera.tokenize([f"a photo of object number {i}" for i in range(args.batch)])
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, ViT-B/32 CLIP train step")
    rates = {}
    for name, model in build(args.batch).items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for prec in ("fp32", "bf16"):
            fn = step_fn(name, model, opt, pixels, ids)
            ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if prec == "bf16" else torch.enable_grad
            with ctx():
                fn()  # warm-up
                best = float("inf")
                for _ in range(args.iters):
                    t = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - t)
            rates[(name, prec)] = args.batch / best
            print(f"{name:13s} {prec}: {args.batch / best:6.2f} samples/s")
    for prec in ("fp32", "bf16"):
        ref = max(rates[("open_clip", prec)], rates[("transformers", prec)])
        print(f"ratio tessera / faster reference, {prec}: {rates[('tessera', prec)] / ref:.2f}x (goal >= 1.2x)")


if __name__ == "__main__":
    main()
