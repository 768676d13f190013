"""Trainer checkpoints that describe themselves and survive a crash.

Layout: `<out>/checkpoints/step-00000100/` holding
- `dcp/`: model and optimizer as `torch.distributed.checkpoint` shards (each rank its own; loads
  onto another world size or strategy),
- `model.safetensors` + `config.json`: the consolidated HF export (`tessera.from_pretrained`,
  transformers),
- `trainer_state.pt`: scheduler, step, every rank's RNG states and data position, format version
  (plain data, read with `weights_only=True`),
- `recipe.json`.
A checkpoint is written into a hidden temp folder, every file fsynced, then renamed into place:
a folder named `step-*` is always complete. The last K are kept. Several nodes need the run
folder on a shared filesystem.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import shutil
import warnings
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist

from .. import _C
from ..models.weights import save_weights

FORMAT_VERSION = 2
STATE_FILE = "trainer_state.pt"
DCP_DIR = "dcp"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(out_dir: str) -> List[str]:
    root = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith("step-") and os.path.isdir(os.path.join(root, n)))
    return [os.path.join(root, n) for n in names]


def _discard(ckpt_dir: str) -> None:
    """Renames a checkpoint out of the `step-*` namespace before deleting it: a kill during the
    delete then leaves a hidden folder, never a half-deleted checkpoint that resume would pick."""
    head, name = os.path.split(ckpt_dir)
    trash = os.path.join(head, f".old-{name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.rename(ckpt_dir, trash)
    _fsync_dir(head)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _single_process_quiet():
    """DCP runs as one process when torch.distributed is not initialised, and warns that it
    assumes so; that is what a single-process run means."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _barrier(info) -> None:
    if info.world_size > 1:
        dist.barrier()


def save_checkpoint(out_dir: str, wrapped, optimizer, trainer_state: Dict[str, Any], recipe: Dict[str, Any],
                    keep: int, info) -> str:
    """Every rank calls this. Model and optimizer go through `torch.distributed.checkpoint` (each
    rank writes its shard; replicated tensors once), rank 0 adds the consolidated HF export, the
    trainer state and the recipe, then renames the folder into place and prunes all but `keep`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    step = int(trainer_state["step"])
    root = os.path.join(out_dir, "checkpoints")
    final = os.path.join(root, f"step-{step:08d}")
    tmp = os.path.join(root, f".tmp-step-{step:08d}")  # one name on every rank (shared folder)
    if info.is_main:
        os.makedirs(root, exist_ok=True)
        for stale in os.listdir(root):  # left by a run killed while writing or pruning
            if stale.startswith((".tmp-step-", ".old-step-")):
                shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
        os.makedirs(tmp)
    _barrier(info)
    model_sd, optim_sd = get_state_dict(wrapped.model, optimizer)
    with _single_process_quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=os.path.join(tmp, DCP_DIR))
    full = wrapped.full_state_dict()  # a collective when sharded
    if info.is_main:
        if hasattr(wrapped.model, "save_pretrained"):  # HF layout: config.json + model.safetensors
            wrapped.model.save_pretrained(tmp, state_dict=full)
        else:  # a task's plain nn.Module: its tensors under their names
            save_weights(tmp, {k: v.contiguous() for k, v in full.items()})
        buf = io.BytesIO()
        torch.save({"format_version": FORMAT_VERSION, **trainer_state}, buf)
        _C.core.write_file_atomic(os.path.join(tmp, STATE_FILE), buf.getvalue())
        _C.core.write_file_atomic(os.path.join(tmp, "recipe.json"), (json.dumps(recipe, indent=2) + "\n").encode())
        for dirpath, _, _ in os.walk(tmp):
            _fsync_dir(dirpath)
        if os.path.exists(final):
            _discard(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
            _discard(old)
    _barrier(info)
    return final


def load_checkpoint(ckpt_dir: str, wrapped, optimizer) -> Dict[str, Any]:
    """Restores model and optimizer from the DCP shards (resharded to this run's world size and
    strategy) and returns the trainer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    state = load_trainer_state(ckpt_dir)
    model_sd, optim_sd = get_state_dict(wrapped.model, optimizer)
    try:
        with _single_process_quiet():
            dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=os.path.join(ckpt_dir, DCP_DIR))
    except Exception as e:  # DCP names missing keys or shapes; say which checkpoint
        raise ValueError(f"{ckpt_dir}: cannot restore model/optimizer from {DCP_DIR}/: {e}") from None
    set_state_dict(wrapped.model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    return state


def load_trainer_state(ckpt_dir: str) -> Dict[str, Any]:
    path = os.path.join(ckpt_dir, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{ckpt_dir} is not a tessera checkpoint: {STATE_FILE} is missing")
    # weights_only: opening a checkpoint someone else wrote must never run their code.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load: it holds objects other than tensors and plain data ({e})") from None
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version!r} is newer than this tessera reads "
                         f"({FORMAT_VERSION}); upgrade tessera (pip install -U tessera) to resume it")
    if version < FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} (model + optimizer without "
                         f"torch.distributed.checkpoint shards) is older than this tessera resumes "
                         f"({FORMAT_VERSION}); its weights still load with tessera.from_pretrained")
    return state


def latest_checkpoint(out_dir: str) -> Optional[str]:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str, what: str = "checkpoint", hint: str = "") -> str:
    """A checkpoint folder (config.json, or the trainer state of a task's plain module) as is, or
    a run folder's newest checkpoint."""
    if any(os.path.isfile(os.path.join(path, f)) for f in ("config.json", STATE_FILE)):
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        raise FileNotFoundError(f"{what} {path}: neither a checkpoint folder (config.json or {STATE_FILE}) nor a "
                                f"run folder with checkpoints/" + (f" ({hint})" if hint else ""))
    return newest
