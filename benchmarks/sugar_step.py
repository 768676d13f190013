"""Sugar's training step (issue 16) against an L_g-only step, the demo's sizes, same run.

Three trainers built as `tessera train` builds them (recipe -> task -> Trainer.setup: model, LoRA,
AdamW, scheduler), each timed on the same batches and step numbers, interleaved, through
`Trainer.train_step` (forward, backward, clipping, optimizer step):

- sugar:   recipes/fashion_mnist_sugar.yaml, L = L_g + alpha L_d
- twin:    recipes/fashion_mnist_sugar_lg_only.yaml (alpha 0; it still computes L_d, by design)
- L_g:     the twin's task with L_d left out (no points, targets or projector): the plain LM step

Goal: sugar <= 1.15x L_g. Then a breakdown of sugar's step with timers around its parts.
Needs runs/demo, runs/demo-mae, runs/demo-llava2, runs/data/llava, runs/data/interleaved (make sugar).

    .venv/bin/python benchmarks/sugar_step.py [--rounds 40] [--threads N] [--cache-dir DIR] [--smoke]

--cache-dir: where the slice-vector cache is read or built (~1 min once; default beside the data, as
training does). Wall-clock medians; the per-round ratio pairs steps run next to each other in time.
"""
import argparse
import os
import statistics
import time
from collections import defaultdict

import torch

from tessera.losses import sugar as sugar_losses
from tessera.train import Trainer, build_task, load_recipe
from tessera.train import sugar_task
from tessera.train.conversation_data import load_pixels
from tessera.train.distributed import init_distributed
from tessera.train.hardware import cpu_flags
from tessera.train.tasks import MixedLoss, TokenLoss

RECIPES = {"sugar": "recipes/fashion_mnist_sugar.yaml", "twin": "recipes/fashion_mnist_sugar_lg_only.yaml"}


class LgOnlyTask(sugar_task.SugarTask):
    """SugarTask's generative half alone: the same data, images and forward, no point weights."""

    def compute_loss(self, wrapped, model, batch, step):
        device, width = model.device, int(batch["attention_mask"].sum(1).max())
        pixels = load_pixels([p for i in batch["index"].tolist() for p in self.row_images(i)], self.transform)
        out = wrapped(input_ids=batch["input_ids"][:, :width].to(device),
                      pixel_values=None if pixels is None else pixels.to(device),
                      attention_mask=batch["attention_mask"][:, :width].to(device),
                      labels=batch["labels"][:, :width].to(device))
        return {"loss": MixedLoss(TokenLoss(out["loss_sum"], out["num_tokens"]), {}, token_name="generative")}


def trainer(name, recipe_path, overrides, task_class=None):
    recipe = load_recipe(recipe_path, overrides)
    task = task_class(recipe) if task_class else build_task(recipe, 0, 1)
    t = Trainer(recipe, task, f"/tmp/sugar_step-{name}", init_distributed(), progress=False)
    t.setup()  # no fit: nothing is written
    return t


class Timers:
    """Wall time of named calls, summed per step; patched in only for the breakdown pass."""

    def __init__(self):
        self.now, self.steps = defaultdict(float), defaultdict(list)

    def wrap(self, owner, attr, label):
        fn = getattr(owner, attr)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.now[label] += time.perf_counter() - t
        setattr(owner, attr, timed)

    def forward(self, module, label):
        start = [0.0]

        def before(*_):
            start[0] = time.perf_counter()

        def after(*_):
            self.now[label] += time.perf_counter() - start[0]
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)

    def end_step(self, total):
        self.steps["step"].append(total)
        for k, v in self.now.items():
            self.steps[k].append(v)
        self.now.clear()

    def median(self, label):
        return statistics.median(self.steps[label]) * 1e3 if self.steps[label] else 0.0


def run_step(t, batch, step):
    t0 = time.perf_counter()
    t.train_step(iter([batch]), step)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40, help="timed steps per trainer, interleaved")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches cycled through")
    ap.add_argument("--cache-dir", default="", help="targets.cache_dir (default: beside the data, as the recipe)")
    ap.add_argument("--threads", type=int, default=0, help="train.threads (0: the trainer's default, every core)")
    ap.add_argument("--smoke", action="store_true", help="2 rounds, 1 warm-up: checks the script")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.warmup = 2, 1
    overrides = [f"train.threads={a.threads}"] + ([f"targets.cache_dir={a.cache_dir}"] if a.cache_dir else [])
    flags = cpu_flags()
    trainers = {"sugar": trainer("sugar", RECIPES["sugar"], overrides),
                "twin": trainer("twin", RECIPES["twin"], overrides),
                "L_g": trainer("L_g", RECIPES["twin"], overrides, LgOnlyTask)}
    d, loss = trainers["sugar"].recipe.data, trainers["sugar"].recipe.loss
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, avx2={'avx2' in flags} "
          f"avx512f={'avx512f' in flags} avx512_bf16={'avx512_bf16' in flags}; batch {d.batch_size}, "
          f"max_length {d.max_length}, {loss.points_per_sample} points/sample, fp32")
    loader = iter(trainers["sugar"].task.train_loader(0, 1))
    batches = [next(loader) for _ in range(a.batches)]
    schedule = [(batches[i % len(batches)], i) for i in range(a.warmup + a.rounds)]

    times = defaultdict(list)
    for i, (batch, step) in enumerate(schedule):  # A, B, C, A, B, C, ...
        for name, t in trainers.items():
            dt = run_step(t, batch, step)
            if i >= a.warmup:
                times[name].append(dt)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"\n{'step':8s} {'median ms':>10s} {'vs L_g':>7s}")
    for name in trainers:
        print(f"{name:8s} {med[name]:10.1f} {med[name] / med['L_g']:6.2f}x")
    ratio = med["sugar"] / med["L_g"]
    paired = statistics.median(x / y for x, y in zip(times["sugar"], times["L_g"]))  # neighbours in time
    print(f"ratio sugar / L_g: {ratio:.2f}x (goal <= 1.15x {'met' if ratio <= 1.15 else 'missed'}); "
          f"median of per-round ratios {paired:.2f}x; sugar / twin (alpha 0): {med['sugar'] / med['twin']:.2f}x")

    # Breakdown: the same steps again with timers patched in; sugar and L_g interleaved.
    timers = {"sugar": Timers(), "L_g": Timers()}
    for name in timers:
        tm, t = timers[name], trainers[name]
        tm.wrap(t.task, "compute_loss", "compute_loss")
        tm.forward(t.model, "model forward")
        if name == "sugar":
            tm.forward(t.model.retrieval_projector, "retrieval projector")
            tm.wrap(t.task, "draw_points", "draw_points")
            for fn in ("point_weights", "target_matrix"):
                tm.wrap(sugar_task, fn, fn)
            tm.wrap(sugar_losses, "gather_rows", "gather_rows")
            tm.wrap(sugar_losses, "discriminative_loss", "discriminative_loss (M_r, L_d)")
    # The module-level patches are shared by the tasks; only sugar calls them.
    for i, (batch, step) in enumerate(schedule):
        for name in timers:
            dt = run_step(trainers[name], batch, step)
            if i >= a.warmup:
                timers[name].end_step(dt)
            else:
                timers[name].now.clear()
    s, g = timers["sugar"], timers["L_g"]
    after = lambda tm: tm.median("step") - tm.median("compute_loss")  # backward, clipping, AdamW  # noqa: E731
    rows = [("step (instrumented)", s.median("step"), g.median("step")),
            ("compute_loss", s.median("compute_loss"), g.median("compute_loss")),
            ("  model forward", s.median("model forward"), g.median("model forward")),
            ("    retrieval projector", s.median("retrieval projector"), 0.0),
            ("  draw_points", s.median("draw_points"), 0.0),
            ("  point_weights", s.median("point_weights"), 0.0),
            ("  gather_rows", s.median("gather_rows"), 0.0),
            ("  target_matrix (GAK M_l)", s.median("target_matrix"), 0.0),
            ("  discriminative_loss (M_r, L_d)", s.median("discriminative_loss (M_r, L_d)"), 0.0),
            ("backward + clip + AdamW", after(s), after(g))]
    print(f"\n{'part (median ms)':34s} {'sugar':>8s} {'L_g':>8s} {'extra':>8s}")
    for label, x, y in rows:
        print(f"{label:34s} {x:8.1f} {y:8.1f} {x - y:+8.1f}")


if __name__ == "__main__":
    main()
