"""CLIP training speed on CPU, tessera against the references in the same run.

step: samples/s of one ViT-B/32 CLIP step (forward, contrastive loss, backward, AdamW): tessera vs
      open_clip vs transformers, same batch, fp32 and bf16 autocast; tessera both on the same ids
      (padded to 77) and on its trainer's input (the columns after every caption's end cut).
e2e:  the whole training loop on Fashion-MNIST images stored as PNG files + a CSV of captions:
      `tessera train` (native data pipeline; 1 process, and ddp / fsdp2 on 2 ranks) vs open_clip's
      own training script `open_clip_train` (PIL + torchvision + torch DataLoader; 1 process and
      DDP on 2 ranks), same model (the demo recipe's CLIP), batch and steps; steady-state
      samples/s from each one's own log.

    .venv/bin/python benchmarks/clip_train_cpu.py [--mode step|e2e|all] [--batch 16] [--iters 3]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
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


TRAINER_INPUT = "tessera, trainer's input"


def step_benchmark(args):
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    pixels = torch.randn(args.batch, 3, 224, 224)
    ids = tessera.tokenize([f"a photo of object number {i}" for i in range(args.batch)])
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, ViT-B/32 CLIP train step")
    from tessera.train.clip_task import trim_trailing_padding

    rates = {}
    models = build(args.batch)
    # tessera's trainer cuts the columns after every caption's end (train/clip_task.py); open_clip's
    # and transformers' training scripts pad every batch to 77: the same model on its trainer's input.
    models[TRAINER_INPUT] = models["tessera"]
    for name, model in models.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        for prec in ("fp32", "bf16"):
            fn = step_fn(name.partition(",")[0], model, opt, pixels,
                         trim_trailing_padding(ids) if name == TRAINER_INPUT else ids)
            ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if prec == "bf16" else torch.enable_grad
            with ctx():
                fn()  # warm-up
                best = float("inf")
                for _ in range(args.iters):
                    t = time.perf_counter()
                    fn()
                    best = min(best, time.perf_counter() - t)
            rates[(name, prec)] = args.batch / best
            print(f"{name:26s} {prec}: {args.batch / best:6.2f} samples/s")
    for prec in ("fp32", "bf16"):
        ref = max(rates[("open_clip", prec)], rates[("transformers", prec)])
        print(f"ratio tessera / faster reference, {prec}: same ids {rates[('tessera', prec)] / ref:.2f}x, "
              f"each trainer's input {rates[(TRAINER_INPUT, prec)] / ref:.2f}x "
              f"(goal >= 1.2x)")


# ---- end to end -------------------------------------------------------------------------------
HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# The demo recipe's model, in both libraries' spellings.
OPEN_CLIP_CONFIG = {"embed_dim": 128,
                    "vision_cfg": {"image_size": 28, "layers": 4, "width": 128, "head_width": 32, "patch_size": 7,
                                   "mlp_ratio": 4.0},
                    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3}}
TESSERA_RECIPE = {
    "model": {"config": {"projection_dim": 128,
                         "text_config": {"vocab_size": 49408, "hidden_size": 128, "intermediate_size": 512,
                                         "num_hidden_layers": 3, "num_attention_heads": 4,
                                         "max_position_embeddings": 16, "hidden_act": "gelu"},
                         "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4,
                                           "num_attention_heads": 4, "image_size": 28, "patch_size": 7,
                                           "hidden_act": "gelu"}}},
    "optim": {"lr": 1e-3, "weight_decay": 0.1, "warmup_fraction": 0.1},
    "eval": {"zero_shot": False},
}


def write_png_dataset(root: str, n: int) -> str:
    """The first n Fashion-MNIST training images as PNG files and a CSV (image, caption)."""
    from PIL import Image

    from tessera.data import FashionMNIST

    ds = FashionMNIST(split="train")
    rows = ["image,caption"]
    for i in range(n):
        img, label = ds[i]
        path = os.path.join(root, f"{i:06d}.png")
        Image.fromarray(img.squeeze().numpy()).save(path)
        rows.append(f"{path},a photo of a {CLASSES[int(label)]}.")
    csv = os.path.join(root, "train.csv")
    with open(csv, "w") as f:
        f.write("\n".join(rows) + "\n")
    return csv


def launch(procs: int):
    if procs == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]


def run_tessera(tmp, csv, batch, steps, procs, strategy):
    import yaml

    recipe = dict(TESSERA_RECIPE)
    recipe["data"] = {"dataset": "captions", "root": csv, "image_size": 28, "context_length": 16,
                      "batch_size": batch // procs, "num_workers": 1}
    recipe["train"] = {"steps": steps, "log_every": 5, "checkpoint_every": 0, "strategy": strategy}
    path = os.path.join(tmp, f"tessera_{strategy}_{procs}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f)
    out = os.path.join(tmp, f"tessera_{strategy}_{procs}")
    subprocess.run([*launch(procs), "-m", "tessera.train", path, "--out", out, "--quiet"], check=True,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))})
    rates = [json.loads(line)["samples_per_s"] for line in open(os.path.join(out, "metrics.jsonl"))
             if "samples_per_s" in line]
    return sorted(rates[1:])[len(rates[1:]) // 2]  # the median interval after the first


def run_open_clip(tmp, csv, batch, steps, procs):
    cfg = os.path.join(tmp, "tess-small.json")
    with open(cfg, "w") as f:
        json.dump(OPEN_CLIP_CONFIG, f)
    n = batch * steps
    args = ["--train-data", csv, "--dataset-type", "csv", "--csv-separator", ",", "--csv-img-key", "image",
            "--csv-caption-key", "caption", "--model", "tess-small", "--batch-size", str(batch // procs),
            "--epochs", "1", "--train-num-samples", str(n), "--workers", "1", "--lr", "1e-3", "--wd", "0.1",
            "--warmup", str(max(1, steps // 10)), "--log-every-n-steps", "5", "--save-frequency", "0",
            "--logs", os.path.join(tmp, f"open_clip_{procs}"), "--name", "run", "--device", "cpu",
            "--dist-backend", "gloo", "--report-to", "", "--precision", "fp32", "--zeroshot-frequency", "0",
            "--val-frequency", "0"]
    args_file = os.path.join(tmp, f"open_clip_args_{procs}.json")
    with open(args_file, "w") as f:
        json.dump(args, f)
    run = subprocess.run([*launch(procs), os.path.join(HERE, "open_clip_train_entry.py"), cfg, args_file],
                         capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs))})
    log = run.stdout + run.stderr
    if run.returncode != 0:
        raise RuntimeError(f"open_clip_train failed:\n{log[:6000]}")
    # "Batch (t): AVG" per log interval (meters reset after each log line), data time included.
    avgs = [float(m) for m in re.findall(r"Batch \(t\): ([0-9.]+)", log)]
    rates = [batch / a for a in avgs[1:]]
    return sorted(rates)[len(rates) // 2]


def e2e_benchmark(args):
    from tessera.train.hardware import cpu_flags

    print(f"\nend to end: the demo CLIP, batch {args.e2e_batch} (global), {args.e2e_steps} steps, "
          f"{os.cpu_count()} cores, avx512_bf16={'avx512_bf16' in cpu_flags()}")
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_png_dataset(tmp, args.e2e_batch * args.e2e_steps)
        rows = {}
        for procs in (1, 2):
            rows[("open_clip", procs, "ddp")] = run_open_clip(tmp, csv, args.e2e_batch, args.e2e_steps, procs)
            for strategy in (["ddp"] if procs == 1 else ["ddp", "fsdp2"]):
                rows[("tessera", procs, strategy)] = run_tessera(tmp, csv, args.e2e_batch, args.e2e_steps, procs,
                                                                 strategy)
        for (lib, procs, strategy), rate in rows.items():
            print(f"{lib:9s} {procs} process(es) {strategy if procs > 1 else 'single':6s} {rate:8.0f} samples/s")
        for procs, strategy in ((1, "ddp"), (2, "ddp"), (2, "fsdp2")):
            ratio = rows[("tessera", procs, strategy)] / rows[("open_clip", procs, "ddp")]
            label = f"{procs} process(es) {strategy if procs > 1 else 'single'}"
            print(f"ratio tessera / open_clip_train, {label}: {ratio:.2f}x (goal >= 1.2x)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["step", "e2e", "all"], default="all")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--e2e-batch", type=int, default=256)
    ap.add_argument("--e2e-steps", type=int, default=30)
    args = ap.parse_args()
    if args.mode in ("step", "all"):
        step_benchmark(args)
    if args.mode in ("e2e", "all"):
        e2e_benchmark(args)


if __name__ == "__main__":
    main()
