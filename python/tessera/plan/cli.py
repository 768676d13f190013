"""`tessera plan RECIPE [--set k=v] [--world-size N] [--device-memory 24GB] [--measure] [--json]`."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from .estimate import MemoryPlan, plan_memory, suggest, variants

MiB = 2 ** 20


_WIDTH = 28  # the name column (per-layer rows name their stack: "per language_model layer")


def _mib(b: float) -> str:
    return f"{b / MiB:9.1f}"


def _label(p: MemoryPlan) -> str:
    s = p.settings
    strat = s.strategy if s.world_size > 1 else "single"
    return (f"{strat:6s} {s.precision:4s} ckpt={'on ' if s.checkpointing else 'off'} "
            f"batch={s.batch_size}x{s.accumulation}" + (" in_backward" if s.in_backward else ""))


def _note_unmodelled_freezing(recipe, shape, plan) -> None:
    """A task whose shape counts parameters without names cannot apply model.freeze/trainable:
    the plan says so (its figures are then an upper bound) instead of ignoring them silently, and
    a pattern that is not a regular expression is refused as training would refuse it."""
    from ..train.freeze import compile_patterns

    if not (recipe.model.freeze or recipe.model.trainable) or shape.trainable is not None:
        return
    compile_patterns(None, recipe.model.freeze, recipe.model.trainable)
    plan.notes.append(f"model.freeze / model.trainable are not modelled for task {recipe.task!r}: every parameter "
                      "is counted as trainable, so gradients and optimizer state are an upper bound")


def _env_world_size() -> int:
    """torchrun's WORLD_SIZE (1 when unset), checked by --world-size's own type."""
    import argparse

    from ..cli_types import positive_int

    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise ValueError(f"the environment's WORLD_SIZE must be an integer >= 1, got {text!r}") from None


def format_plan(p: MemoryPlan, table: List[MemoryPlan], fits: List[MemoryPlan], measured=None) -> str:
    s = p.settings
    lines = [f"memory per rank, {s.world_size} process(es) on {s.device}, {p.params / 1e6:.2f} M parameters"
             + (f" ({p.trainable / 1e6:.2f} M trainable)" if p.trainable < p.params else ""),
             f"recipe: {_label(p)}", "", f"{'component':{_WIDTH + 2}s}      MiB"]
    for name in ("weights", "gradients", "optimizer", "activations", "temporaries", "communication", "data",
                 "runtime"):
        lines.append(f"  {name:{_WIDTH}s}{_mib(getattr(p, name))}")
    for stack, b in p.activations_per_layer.items():
        label = stack if "," in stack else f"per {stack} layer"  # a fitted part: all its layers
        lines.append(f"    {label:{_WIDTH - 2}s}{_mib(b)}")
    lines.append(f"  {'peak (' + p.peak_moment + ')':{_WIDTH}s}{_mib(p.peak)}")
    if measured:
        ratio = measured["peak"] / p.peak
        lines.append(f"  {'measured peak':{_WIDTH}s}{_mib(measured['peak'])}  ({measured['how']}; measured/planned "
                     f"{ratio:.2f})")
    lines += ["", "the same run under other settings (peak MiB per rank):"]
    lines += [f"  {_label(q):42s}{_mib(q.peak)}" for q in table]
    if fits is not None:
        lines += ["", "settings that fit (fastest first):" if fits else "nothing fits: shard over more processes, "
                  "shorten sequences or use a smaller model"]
        lines += [f"  {_label(q):42s}{_mib(q.peak)}" for q in fits]
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def run_plan(args) -> int:
    from ..models.weights import parse_size
    from ..train import load_recipe
    from ..train.hardware import cpu_has_native_bf16
    from ..train.tasks import import_modules
    from . import model_shape, settings_for

    running = _env_world_size()
    world = args.world_size or running
    if args.measure and world != running:  # a measurement of one setup against a plan of another
        raise ValueError(f"--measure runs the recipe in this process group ({running} process(es)), but the plan is for "
                         f"{world}: launch it with `torchrun --nproc_per_node {world} -m tessera plan ... --measure`")
    if args.measure:
        from .measure import ensure_mmap_threshold

        ensure_mmap_threshold()
    import_modules(args.imports)
    recipe = load_recipe(args.recipe, args.set)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = model_shape(recipe)
    base = settings_for(recipe, shape, world, device)
    plan = plan_memory(shape, base)
    table = variants(shape, base)
    _note_unmodelled_freezing(recipe, shape, plan)
    fits = None
    if args.device_memory:
        bf16_ok = device == "cuda" or cpu_has_native_bf16()
        from ..train.tasks import task_class

        coupled = getattr(task_class(recipe.task), "batch_coupled", False)
        fits = suggest(shape, base, parse_size(args.device_memory), bf16_ok, batch_coupled=bool(coupled))
        if coupled:
            plan.notes.append(f"the loss couples a batch's samples ({coupled}): the suggestions keep the "
                              "recipe's micro-batch, since accumulating smaller ones trains a different loss")
        if not bf16_ok:
            plan.notes.append("bf16 left out of the suggestions: this CPU emulates it (about 6x slower)")
        if shape.has_lora:
            plan.notes.append("LoRA (the recipe's lora section) trains adapters only: gradients and optimizer "
                              "state shrink to them")
    measured = None
    if args.measure:
        from ..train.distributed import init_distributed, shutdown_distributed
        from .measure import measure_peak

        info = init_distributed()
        measured = measure_peak(recipe, info=info)
        if info.world_size > 1:
            import torch.distributed as dist

            peaks = [None] * info.world_size
            dist.all_gather_object(peaks, measured)
            measured = max(peaks, key=lambda m: m["peak"])
            shutdown_distributed()
            if info.rank != 0:
                return 0
    if args.json:
        out: Dict[str, Any] = {"plan": plan.as_dict(), "variants": [q.as_dict() for q in table]}
        if fits is not None:
            out["fits"] = [q.as_dict() for q in fits]
        if measured:
            out["measured"] = measured
        print(json.dumps(out, indent=2))
    else:
        print(format_plan(plan, table, fits, measured))
    return 0
