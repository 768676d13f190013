"""A causal LM's generation config on disk, as transformers reads and writes it: read at
from_pretrained (the folder's generation_config.json, else what transformers derives from
config.json), written beside the weights at save, and kept out of config.json (transformers'
config classes hold no generation setting; given as a config key one is refused)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from .. import _C
from ..io import is_regular_file
from .generation_settings import GENERATION_FILE, GENERATION_KEYS, UNAPPLIED
from .generation_view import config_defaults, config_ids, read_generation_defaults, unread

#: transformers' generation settings that are not model config keys: all but the stop, pad and
#: cache keys that model configs hold themselves.
GENERATION_ONLY = (set(GENERATION_KEYS) | set(UNAPPLIED)) - {"eos_token_id", "pad_token_id", "bos_token_id",
                                                             "use_cache"}


def read_generation(model, folder: str) -> None:
    """The model's generation defaults from its folder: generation_config.json as written, else
    (`config_generation`) what transformers derives from config.json (from_model_config). A model
    that reads no such file (BLIP-2) names the settings it leaves."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    defaults = read_generation_defaults(folder, getattr(embeddings, "num_embeddings", None))
    if not model.reads_generation_file:
        unread(model, folder, defaults)
        return
    model.generation_defaults = defaults
    if defaults is None:
        model.config_generation = config_defaults(model, folder)


def write_generation_config(model, path: str) -> None:
    """generation_config.json beside the model: the file already there keeps its other keys
    (HF's max_length, bos_token_id, ...), generate's keys are the model's defaults, so a model
    without defaults never reloads another's; a file left with nothing is removed.

    Once the file exists transformers reads its stop ids there alone. Without a generation config
    of its own the model stops at the config's: they go in (the outer config's over its text
    config's), as transformers' from_model_config puts them (a file without them decoded past the
    end in transformers). A config of its own keeps its ids as they are, an empty one included;
    bos, which decoder-only generation does not read, goes in either way."""
    target = os.path.join(path, GENERATION_FILE)
    existing: Dict[str, Any] = {}
    if is_regular_file(target, "a generation config"):
        try:
            with open(target, encoding="utf-8") as f:
                existing = json.load(f)
        except (OSError, ValueError):
            existing = {}
    ours = set(GENERATION_KEYS) | set(UNAPPLIED)
    doc = {k: v for k, v in (existing if isinstance(existing, dict) else {}).items() if k not in ours}
    defaults = getattr(model, "generation_defaults", None) if model.reads_generation_file else None
    # without a config of its own: what it generates with, config.json's settings included
    doc.update(defaults if defaults is not None else getattr(model, "config_generation", None) or {})
    if doc or defaults is not None:
        ids = config_ids(model, ("bos_token_id",) if defaults is not None else
                         ("bos_token_id", "eos_token_id", "pad_token_id"))
        doc.update({k: v for k, v in ids.items() if doc.get(k) is None})
        _C.core.write_file_atomic(target, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    elif os.path.isfile(target):
        os.remove(target)


def _sub_config(key: str) -> bool:
    return key.endswith("_config") or key in ("decoder", "generator")


def generation_keys_in(overrides: Dict[str, Any], prefix: str = "") -> List[str]:
    """The generation settings among config overrides, its sub-configs' included (text_config's;
    not a mapping of data such as label2id)."""
    found = [prefix + k for k in overrides if k in GENERATION_ONLY]
    for key, value in overrides.items():
        if isinstance(value, dict) and _sub_config(key):
            found += generation_keys_in(value, f"{prefix}{key}.")
    return found


def without_generation_keys(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config as config.json holds it: without generation settings, which transformers' config
    classes drop and its save writes to generation_config.json. Kept, a model built from a dict
    holding them (`create_model("llama-50m", max_length=12)`) generated without them but its
    folder, reloaded, with them."""
    return {k: without_generation_keys(v) if isinstance(v, dict) and _sub_config(k) else v
            for k, v in config.items() if k not in GENERATION_ONLY}
