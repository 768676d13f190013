"""Checkpoint tensors in and out, as transformers lays them out: one model.safetensors, or shards
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json` above a size; key aliases
(another layout of the same weights) and tied weights (stored once)."""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

from .. import _C
from ..io import is_regular_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
# Buffers older transformers versions saved that we compute instead of storing.
_IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: Union[int, str], what: str = "max_shard_size") -> int:
    """Bytes of "5GB", "500MB", "2GiB" or an int (transformers' max_shard_size spelling)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"{what}: cannot read {size!r} (examples: 5GB, 500MB, 2GiB, 1000000)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:  # 0 or -1 wrote one shard per tensor without a word
        raise ValueError(f"{what} must be more than 0 bytes, got {size!r}")
    return value


def load_weights(path: Union[str, os.PathLike], verified: bool = False) -> Dict[str, torch.Tensor]:
    """Tensors of a checkpoint folder (model.safetensors or sharded), memory-mapped (copy on write)
    and validated; a tessera checkpoint's files are checked against its checksums.json first
    (unless the caller just `verified` them)."""
    from ..checksums import verify_model_files

    path = os.fspath(path)  # a pathlib.Path reached the C++ reader as a pybind TypeError
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in (SINGLE, INDEX)):
        raise FileNotFoundError(f"no checkpoint in {path}: expected {SINGLE} or {INDEX}")
    if not verified:
        verify_model_files(path)
    tensors = _C.core.load_checkpoint_dir(path)
    return {k: v for k, v in tensors.items() if not _IGNORED_KEYS.search(k)}


def weight_files(path: str) -> List[str]:
    """The files load_weights reads from the folder `path`, as names in it: model.safetensors, or
    the index and every shard it lists (what a fingerprint of the weights must hash)."""
    if os.path.isfile(os.path.join(path, SINGLE)):
        return [SINGLE]
    index = os.path.join(path, INDEX)
    if not is_regular_file(index):
        raise FileNotFoundError(f"no checkpoint in {path}: expected {SINGLE} or {INDEX}")
    try:
        with open(index, encoding="utf-8") as f:
            names = list(json.load(f)["weight_map"].values())
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index}: not a valid index (a 'weight_map' of tensor names to shard files): {e}") from None
    # As the C++ loader reads them: plain file names in the folder, never a path out of it.
    bad = [n for n in names if not isinstance(n, str) or not n or "/" in n or "\\" in n or n in (".", "..")]
    if bad or not names:
        raise ValueError(f"{index}: weight_map must name shard files in the folder (plain file names), got "
                         f"{bad[0] if bad else 'no file'!r}")
    return [INDEX] + sorted(set(names))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def check_saveable(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuses, before anything is written, what a safetensors file cannot hold: a meta tensor
    (no values), or a tensor subclass such as FSDP2's DTensor (one rank's shard; the C++ writer,
    which runs without the GIL, crashed the process on it)."""
    for name, t in tensors.items():
        if t.is_meta:
            raise ValueError(f"{what}: {name} is on the meta device and holds no values; materialise the model "
                             "first (to_empty, then init_weights() or a load)")
        if type(t) not in (torch.Tensor, torch.nn.Parameter):
            raise ValueError(f"{what}: {name} is a {type(t).__name__} (a sharded or wrapped tensor), not the values "
                             "to write; pass the full state dict as state_dict=: torch.distributed.checkpoint."
                             "state_dict.get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, "
                             "cpu_offload=True)) on every rank, then save on rank 0")


def save_weights(path: str, tensors: Mapping[str, torch.Tensor], max_shard_size: Union[int, str] = "5GB") -> List[str]:
    """Writes `tensors` to the folder `path` (each file atomically): one file up to
    max_shard_size, else shards of at most that size (a larger tensor gets a shard of its own)
    and an index. Files of the other layout left from an earlier save are removed afterwards.
    Returns the files written."""
    limit = parse_size(max_shard_size)
    check_saveable(tensors, f"saving {path}")
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):  # the C++ writer would say it as a RuntimeError
        raise PermissionError(f"{path}: the folder is not writable; nothing was written")
    meta = {"format": "pt"}
    total = sum(_nbytes(t) for t in tensors.values())
    if total <= limit:
        _C.core.save_safetensors(os.path.join(path, SINGLE), dict(tensors), meta)
        written = [SINGLE]
    else:
        shards: List[Dict[str, torch.Tensor]] = [{}]
        size = 0
        for key in sorted(tensors):
            n = _nbytes(tensors[key])
            if shards[-1] and size + n > limit:
                shards.append({})
                size = 0
            shards[-1][key] = tensors[key]
            size += n
        written, weight_map = [], {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            _C.core.save_safetensors(os.path.join(path, name), shard, meta)
            weight_map.update({k: name for k in shard})
            written.append(name)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _C.core.write_file_atomic(os.path.join(path, INDEX), (json.dumps(index, indent=2) + "\n").encode())
        written.append(INDEX)
    # The loader prefers model.safetensors over an index: stale files of the other layout go.
    for name in os.listdir(path):
        if name not in written and (name in (SINGLE, INDEX) or _SHARD.match(name)):
            os.remove(os.path.join(path, name))
    return written


def apply_key_aliases(state: Mapping[str, torch.Tensor], own_keys: Iterable[str],
                      aliases: Iterable[Tuple[str, str]]) -> Dict[str, torch.Tensor]:
    """Renames checkpoint keys that the model lacks by the first alias (regex, replacement) that
    turns them into a key it has; e.g. MAE's transformers-4 `decoder.decoder_layers.N` to
    `decoder.decoder_encoder.layer.N`. Keys already known, or matched by no alias, stay. The
    replacement is plain text, as in the C++ loader (core/weight_loading.h): no group references."""
    own = set(own_keys)
    compiled = [(re.compile(p), r) for p, r in aliases]
    out = {}
    for key, value in state.items():
        if key not in own:
            for pattern, repl in compiled:
                new = pattern.sub(lambda _, text=repl: text, key, count=1)
                if new != key and new in own:
                    key = new
                    break
        out[key] = value
    return out


def fill_tied(state: Mapping[str, torch.Tensor], tied: Mapping[str, str]) -> Dict[str, torch.Tensor]:
    """Adds each tied key (e.g. lm_head.weight) that a checkpoint omits, from its source."""
    out = dict(state)
    for target, source in tied.items():
        if target not in out and source in out:
            out[target] = out[source]
    return out


#: Where research repositories keep the tensors in a checkpoint file: open_clip's and Lightning's
#: `state_dict`, MAE's, BEiT's and LAVIS's `model`, DeepSpeed's `module`.
WRAPPERS = ("state_dict", "model", "module")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: The layouts of the original repositories' files, and what converts each (transformers' scripts).
ORIGINAL_LAYOUTS = (("blocks.0.attn.qkv", "a timm-style ViT (MAE's, BEiT's, timm's own): transformers' "
                     "convert_vit_mae_to_pytorch.py / convert_beit_unilm_to_pytorch.py make a folder of it"),
                    ("visual_encoder.blocks.", "LAVIS's BLIP-2: transformers' convert_blip_2_original_to_pytorch.py "
                     "makes a folder of it"),
                    ("model.mm_projector.", "LLaVA's own: python -m tessera.cli import-llava"))


def read_state_file(path: str, advice: str = "") -> Dict[str, torch.Tensor]:
    """The tensors of one checkpoint file: safetensors, or a PyTorch pickle read with weights_only
    (no code in it runs), unwrapped from a training checkpoint's `state_dict` / `model` / `module`
    entry, DDP's `module.` prefix removed. Errors name the file (and `advice` for code in it)."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return dict(_C.core.load_safetensors(path)[0])
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - code in the pickle, a TorchScript archive, a cut file
        first = _ANSI.sub("", (str(e).splitlines() or [""])[0])[:160]
        if "weights_only" in str(e) or "TorchScript" in str(e):
            raise ValueError(f"{path}: not a checkpoint of tensors that can be read without running code "
                             f"({type(e).__name__}: {first}){'; ' + advice if advice else ''}") from None
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {first or 'no data'}); "
                         "is it cut short or damaged?") from None
    if isinstance(loaded, Mapping) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        inner = next((k for k in WRAPPERS if isinstance(loaded.get(k), Mapping)), None)
        loaded = loaded[inner] if inner is not None else loaded
    if not isinstance(loaded, Mapping) or not loaded:
        raise ValueError(f"{path}: expected a state dict of tensors (or a training checkpoint holding one under "
                         f"{' / '.join(WRAPPERS)}), got {type(loaded).__name__}")
    state = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{path}: holds no tensors (its keys: {', '.join(map(str, list(loaded)[:5]))})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def original_layout(state: Mapping[str, torch.Tensor]) -> str:
    """What converts a state dict in an original repository's layout ("" when none is known)."""
    return next((how for marker, how in ORIGINAL_LAYOUTS if any(marker in k for k in state)), "")


def load_fitting(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str, assign: bool = False) -> None:
    """model.load_state_dict(state, strict=True); when it fails on keys or shapes, the error is
    check_state_fits's one line naming `where`, not torch's key-by-key list. (The model's own
    load_state_dict runs first: it knows its aliases and ties, which a check beforehand would not.)"""
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as e:
        own = model.state_dict()
        aliased = apply_key_aliases(state, own, getattr(model, "key_aliases", []))
        check_state_fits(fill_tied(aliased, getattr(model, "tied_weights", {})), model, where)
        raise ValueError(f"{where}: {str(e).splitlines()[0][:300]}") from e


def check_state_fits(state: Mapping[str, torch.Tensor], model: torch.nn.Module, where: str, shown: int = 3) -> None:
    """Refuses, in one line, a state dict that does not fit `model` (torch's strict load would list
    every key): counts of missing, unexpected and mis-shaped tensors and the first few of each."""
    own = model.state_dict()
    shape = lambda t: list(t.shape)  # noqa: E731
    groups = [("missing", [k for k in own if k not in state]),
              ("unexpected", [k for k in state if k not in own]),
              ("of another shape", [f"{k} {shape(state[k])}, the model's {shape(own[k])}" for k in own
                                    if k in state and tuple(state[k].shape) != tuple(own[k].shape)])]
    parts = []
    for label, keys in groups:
        if keys:
            more = f", ... {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:shown])}{more})")
    if parts:
        raise ValueError(f"{where}: its tensors do not fit {type(model).__name__}: {'; '.join(parts)} - is it a "
                         "checkpoint of another model or recipe?")


def load_part(model: torch.nn.Module, state: Mapping[str, torch.Tensor], folder: str, pattern: str, prefix: str,
              fresh: Optional[str] = None) -> None:
    """Loads one part of `model` from another run's tensors (a LLaVA tower from a CLIP run, a
    projector from a BLIP-2 stage-1 run): those of `state` matching `pattern`, renamed into
    `prefix`. Every tensor of the part must be found, with its shape, except those under `fresh`
    (a part the other run does not have: a new output layer)."""
    own = model.state_dict()
    part = {re.sub(pattern, prefix, k, count=1): v for k, v in state.items() if re.search(pattern, k)}
    part = {k: v for k, v in part.items() if k in own}
    missing = [k for k in own if k.startswith(prefix) and not (fresh and k.startswith(fresh)) and k not in part]
    if missing:
        raise ValueError(f"{folder}: no weights for {len(missing)} tensor(s) of {prefix.rstrip('.')}, e.g. "
                         f"{missing[:3]} (is it the right kind of run?)")
    bad = [k for k, v in part.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{folder}: {bad[0]} has shape {tuple(part[bad[0]].shape)}, the model "
                         f"{tuple(own[bad[0]].shape)}")
    model.load_state_dict(part, strict=False)
