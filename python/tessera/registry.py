"""The one registry of model classes: a family's Python module registers its classes with
`@register_model` (by `model_type` and `architecture`, the keys of a Hugging Face config.json);
its named variants are JSON files in the C++ family folder (csrc/tessera/models/<family>/configs/,
installed as share/tessera/models/), read at import into `tessera._C.core`'s table, where
`add_model_config` adds a user's. `create_model`, `from_pretrained`,
`list_models` and `tessera info` all read these two."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Tuple

from . import _C
from .config_json import config_json

ARCHITECTURES: Dict[str, type] = {}  # config.json architectures[i] -> its one class
MODEL_TYPES: Dict[str, type] = {}  # config.json model_type -> its default class (see register_model)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _same(a: type, b: type) -> bool:
    # A reloaded module defines new class objects under the same names: they replace, not clash.
    return a is b or _name(a) == _name(b)


def _marked(cls: type) -> bool:
    return bool(cls.__dict__.get("default_for_model_type", False))  # the class's own, not inherited


def register_model(cls: type) -> type:
    """Class decorator: from_pretrained and create_model build `cls` for a config whose
    `architectures` names `cls.architecture` (else its class name). An architecture belongs to one
    class: a different class under it is refused (the same class again, as on a module reload, is
    fine). Several classes may share a model_type, as in transformers; a config with a model_type and
    no known architecture builds that model_type's default: the class that sets
    `default_for_model_type = True` in its own body, else the first registered. Extensions (C++ or
    Python) register theirs the same way."""
    if not cls.model_type:
        raise ValueError(f"{cls.__name__} has no model_type to register under")
    arch = cls.architecture or cls.__name__
    taken = ARCHITECTURES.get(arch)
    if taken is not None and not _same(taken, cls):
        raise ValueError(f"architecture {arch!r} is already registered by {_name(taken)}; {_name(cls)} "
                         f"needs an architecture of its own")
    default = MODEL_TYPES.get(cls.model_type)
    if default is not None and _marked(cls) and _marked(default) and not _same(default, cls):
        raise ValueError(f"model_type {cls.model_type!r}: {_name(default)} and {_name(cls)} both set "
                         f"default_for_model_type")
    ARCHITECTURES[arch] = cls
    if default is None or _same(default, cls) or (_marked(cls) and not _marked(default)):
        MODEL_TYPES[cls.model_type] = cls
    return cls


def registered_classes() -> List[type]:
    """Every registered class, sorted by architecture."""
    return [ARCHITECTURES[a] for a in sorted(ARCHITECTURES)]


def model_class(config: Dict[str, Any], where: str = "config") -> type:
    """The registered class for a config dict: its first known architecture, else its model_type's
    default (see register_model)."""
    for arch in config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    raise ValueError(
        f"{where}: unsupported model_type {model_type!r} / architectures {config.get('architectures')!r} "
        f"(supported model types: {', '.join(sorted(MODEL_TYPES))})"
    )


def _shipped_variants_root() -> str:
    # In a checkout the family folders themselves (edits count at once), else the installed copy.
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.join(here, "..", "..", "csrc", "tessera", "models"),
                 os.path.join(here, "share", "tessera", "models")):
        if os.path.isdir(root):
            return os.path.normpath(root)
    raise ImportError(f"tessera's model variants are missing: neither the source tree nor {here}/share holds them")


_C.core.load_config_dir(_shipped_variants_root())


def family_of(cls: type) -> str:
    """The C++ family a registered class belongs to ("clip", "mae", ...): its `_family` submodule."""
    module = getattr(cls, "_family", None)
    if module is None:
        raise ValueError(f"{cls.__name__} is not a C++ family model: it has no named variants")
    return module.__name__.rsplit(".", 1)[-1]


def add_model_config(path: str) -> List[str]:
    """open_clip's add_model_config: registers a variant JSON file (named by its stem) or every
    `*.json` in a folder, each checked strictly by its family (found from the file's
    model_type/architectures); create_model then builds it by name. Returns the names added."""
    from .io import read_json

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"add_model_config takes a file or folder path, got {type(path).__name__}")
    path = os.fspath(path)
    files = sorted(glob.glob(os.path.join(path, "*.json"))) if os.path.isdir(path) else [path]
    if not files:
        raise ValueError(f"{path}: no *.json model configs in this folder")
    pairs = []
    for file in files:
        config = read_json(file)
        if not isinstance(config, dict):
            raise ValueError(f"{file}: a model config must be a JSON object")
        pairs.append((file, family_of(model_class(config, file))))
    return _C.core.load_config_files(pairs)  # all or none: a bad file leaves nothing half-registered


def list_variants() -> List[str]:
    """Named variants (open_clip's names: ViT-B-32, ViT-B-16, ViT-L-14, ...)."""
    return list(_C.core.list_configs())


def variant(name: str) -> Tuple[str, Dict[str, Any]]:
    """(family, config dict) of a named variant; an unknown name lists the known ones."""
    family, text = _C.core.find_config(name)
    return family, json.loads(text)


def validate(family: str, config: Dict[str, Any], where: str) -> None:
    """Strict check of a variant or an override: unknown keys fail with the valid keys listed."""
    _C.core.validate_config(family, config_json(config, where), where)
