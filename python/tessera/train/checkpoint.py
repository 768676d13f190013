"""Trainer checkpoints that describe themselves and survive a crash.

Layout: `<out>/checkpoints/step-00000100/` holding `model.safetensors` + `config.json` (the HF
layout, loadable by `tessera.from_pretrained`), `trainer_state.pt` (optimizer, scheduler, step,
RNG states, data position, format version) and `recipe.json`. A checkpoint is written into a
hidden temp folder, every file fsynced, and then renamed into place: a folder named `step-*`
is always complete. The last K are kept.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import shutil
from typing import Any, Dict, List, Optional

import torch

from .. import _C

FORMAT_VERSION = 1
STATE_FILE = "trainer_state.pt"


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


def save_checkpoint(out_dir: str, model, trainer_state: Dict[str, Any], recipe: Dict[str, Any], keep: int) -> str:
    """Writes checkpoint `step-XXXXXXXX` atomically and prunes all but the newest `keep`."""
    step = int(trainer_state["step"])
    root = os.path.join(out_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"step-{step:08d}")
    tmp = os.path.join(root, f".tmp-step-{step:08d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    model.save_pretrained(tmp)  # each file atomic + fsynced by the C++ writer
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **trainer_state}, buf)
    _C.core.write_file_atomic(os.path.join(tmp, STATE_FILE), buf.getvalue())
    _C.core.write_file_atomic(os.path.join(tmp, "recipe.json"), (json.dumps(recipe, indent=2) + "\n").encode())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format version {version!r} is not supported by this tessera "
            f"(expects {FORMAT_VERSION}); resume with the tessera version that wrote it"
        )
    return state


def latest_checkpoint(out_dir: str) -> Optional[str]:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None
