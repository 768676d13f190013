"""The cache of Sugar's slice vectors: `<cache_dir>/<data file name>-<fingerprint>.pt`.

The fingerprint hashes what the vectors are computed from: the data file, the encoders'
checkpoint files (config.json and model.safetensors, or the index and its shards) and every image
a slice reads, by its resolved path, size and modification time (stat only: hashing every image
would cost more than the cache saves). Another `data.image_folder`, or an image replaced, builds a
new cache. A cache is used only when it holds what the data file lays out (one vector per slice,
image slices where the file has images, the samples' offsets, finite float vectors); anything else,
unreadable or edited, is reported and built again."""
from __future__ import annotations

import hashlib
import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..models.weights import weight_files

CACHE_VERSION = 2


def _hash_file(h, path: str) -> None:
    h.update(os.path.basename(path).encode() + b"\0")
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def fingerprint(data_file: str, encoder_folders: Sequence[str], images: Sequence[str]) -> str:
    """sha256 of the data file, the encoders' checkpoint files, the images' stats and the format."""
    h = hashlib.sha256(f"sugar-targets-v{CACHE_VERSION}\0".encode())
    _hash_file(h, data_file)
    for folder in encoder_folders:  # a sharded checkpoint: its index and every shard
        for name in ["config.json"] + weight_files(folder):
            _hash_file(h, os.path.join(folder, name))
    for path in images:
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def cache_path(data_file: str, cache_dir: str, digest: str) -> str:
    folder = cache_dir or os.path.join(os.path.dirname(os.path.abspath(data_file)), "sugar-targets")
    return os.path.join(folder, f"{os.path.splitext(os.path.basename(data_file))[0]}-{digest[:16]}.pt")


def _fits(state, digest: str, is_image: torch.Tensor, offsets: torch.Tensor, widths) -> Optional[str]:
    """Why a loaded cache does not hold the data file's slices (None when it does)."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not the cache's dict"
    if state.get("fingerprint") != digest:
        return "another fingerprint"
    tensors = {k: state.get(k) for k in ("first", "second", "is_image", "offsets")}
    missing = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if missing:
        return f"no tensor {', '.join(missing)}"
    if not (torch.equal(tensors["is_image"], is_image) and torch.equal(tensors["offsets"], offsets)):
        return "slices other than the data file's"
    for key, width in zip(("first", "second"), widths):
        t = tensors[key]
        if t.dtype != torch.float32 or list(t.shape) != [is_image.numel(), width]:
            return f"{key} is {t.dtype} {list(t.shape)}, expected float32 {[is_image.numel(), width]}"
        if not torch.isfinite(t).all():
            return f"{key} holds values that are not finite"
    return None


def read_cache(path: str, digest: str, is_image: torch.Tensor, offsets: torch.Tensor, widths: Tuple[int, int],
               log: Callable[[str], None]) -> Optional[dict]:
    """The cached tensors when `path` holds this data's slices (and blocks of the encoders'
    `widths`), else None (said through `log` when a file was there)."""
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception as e:  # cut, empty, or a pickle asking for code: never run, built again
        why = f"unreadable ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})"
    else:
        why = _fits(state, digest, is_image, offsets, widths)
        if why is None:
            return state
    log(f"sugar: the target cache {path} is {why}; building it again")
    return None


def write_cache(path: str, state: dict, log: Callable[[str], None]) -> None:
    """Written atomically; a place that cannot take it is said, and the run goes on without it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.isfile(tmp):
            os.remove(tmp)
        log(f"sugar: could not cache the targets at {path} ({e}); they are computed again next time")


def layout(kinds: List[List[bool]]) -> tuple:
    """(is_image [S] bool, offsets [N + 1]) of samples whose slices are images where True."""
    flat = [k for sample in kinds for k in sample]
    offsets = [0]
    for sample in kinds:
        offsets.append(offsets[-1] + len(sample))
    return torch.tensor(flat, dtype=torch.bool), torch.tensor(offsets, dtype=torch.long)
