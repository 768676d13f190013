"""Base class for tessera models: Hugging Face config dicts, from_pretrained / save_pretrained."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional

import torch
from torch import nn

from .. import _C

# Buffers older transformers versions saved that we compute instead of storing.
_IGNORED_CHECKPOINT_KEYS = re.compile(r"(^|\.)position_ids$")


def read_config(path: str) -> Dict[str, Any]:
    """Reads config.json (a folder or the file itself) with an error that names the file."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"no config.json at {file}")
    with open(file, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON in {file}: {e}") from None


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    """Tensors of a checkpoint folder (model.safetensors or sharded), memory-mapped and validated."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint folder not found: {path}")
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("model.safetensors", "model.safetensors.index.json")):
        raise FileNotFoundError(f"no checkpoint in {path}: expected model.safetensors or model.safetensors.index.json")
    tensors = _C.core.load_checkpoint_dir(path)
    return {k: v for k, v in tensors.items() if not _IGNORED_CHECKPOINT_KEYS.search(k)}


class PreTrainedModel(nn.Module):
    """Mixin for models built from a Hugging Face config dict.

    Subclasses set `model_type` and implement `__init__(config)`; `self.config` is the dict.
    """

    model_type: str = ""
    architecture: str = ""

    @classmethod
    def from_pretrained(cls, path: str, **kwargs):
        """Builds the model from `path/config.json` and loads `path/model.safetensors` strictly."""
        config = read_config(path)
        previous = _C.nn.set_init_enabled(False)  # every parameter is loaded next: skip random init
        try:
            model = cls(config, **kwargs)
        except ValueError as e:  # name the file: the C++ message names only the key
            file = os.path.join(path, "config.json") if os.path.isdir(path) else path
            raise ValueError(f"{file}: {e}") from e
        finally:
            _C.nn.set_init_enabled(previous)
        model.load_state_dict(load_weights(path), strict=True)
        return model.eval()  # as transformers does: call .train() to fine-tune

    def save_pretrained(self, path: str) -> None:
        """Writes config.json and model.safetensors (HF layout, atomically)."""
        # Serialise the config first: a config that cannot be written must fail before the
        # weights file is replaced, or the folder would pair new weights with an old config.
        config = dict(self.config)
        config.setdefault("architectures", [self.architecture])
        config.setdefault("model_type", self.model_type)
        data = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
        os.makedirs(path, exist_ok=True)
        tensors = {k: v.detach() for k, v in self.state_dict().items()}
        _C.core.save_safetensors(os.path.join(path, "model.safetensors"), tensors, {"format": "pt"})
        _C.core.write_file_atomic(os.path.join(path, "config.json"), data)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def merge_config(base: Dict[str, Any], overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Recursive dict update (`text_config.hidden_size` style overrides)."""
    out = json.loads(json.dumps(base))
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out
