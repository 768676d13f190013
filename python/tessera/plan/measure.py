"""Measured peak memory of a recipe's first training steps, to hold the planner to: on CUDA
`torch.cuda.max_memory_allocated`; on CPU the growth of the process's peak resident set (VmHWM,
reset through /proc/self/clear_refs) from just before the model is built.

glibc serves mid-sized allocations from heaps it keeps after a free once its dynamic mmap
threshold has grown, so RSS would hold freed tensors; `MALLOC_MMAP_THRESHOLD_` (set before the
process starts: `tessera plan --measure` re-executes itself with it) makes every large tensor an
mmap of its own, and RSS then follows live tensors."""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
from typing import Dict

import torch

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
MMAP_THRESHOLD = str(256 * 1024)


def ensure_mmap_threshold() -> None:
    """Re-executes this command with a fixed mmap threshold unless it already has one."""
    if os.environ.get(MMAP_ENV) is None:
        os.environ[MMAP_ENV] = MMAP_THRESHOLD
        os.execv(sys.executable, [sys.executable, "-m", "tessera.cli", *sys.argv[1:]])


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _warm_up() -> None:
    """Imports what the first optimizer step imports lazily (about 100 MB of Python modules for
    AdamW), so the baseline holds them and the growth is the run's tensors."""
    w = torch.nn.Parameter(torch.randn(8, 8))
    opt = torch.optim.AdamW([w])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (w @ w).float().sum().backward()
    opt.step()


def measure_peak(recipe, steps: int = 3, info=None) -> Dict[str, float]:
    """Runs `steps` optimizer steps of the recipe's task; returns {"peak": bytes, "baseline": bytes,
    "how": ...} for this process."""
    from ..train.distributed import DistInfo
    from ..train.tasks import build_task
    from ..train.trainer import Trainer, batch_stream

    info = info or DistInfo()
    task = build_task(recipe, info.rank, info.world_size)
    cuda = info.device.type == "cuda"
    _warm_up()
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _status("VmRSS")
        if not _reset_peak():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs is not writable here)")
    # The trainer's messages go to stderr: stdout may be `tessera plan --json`'s document.
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(recipe, task, out, info, progress=False)
        trainer.setup()
        loader = task.train_loader(info.rank, info.world_size)
        stream = batch_stream(loader)
        try:
            for step in range(steps):
                trainer.train_step(stream, step)
        finally:  # also when a step raises (out of memory is what the measurement may find)
            if hasattr(loader, "stop"):
                loader.stop()
    if cuda:
        torch.cuda.synchronize()
        return {"peak": float(torch.cuda.max_memory_allocated() - base), "baseline": float(base),
                "how": "torch.cuda.max_memory_allocated"}
    return {"peak": float(_status("VmHWM") - base), "baseline": float(base), "how": "peak RSS growth (VmHWM)"}
