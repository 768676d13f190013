"""The one registry of model classes: a family's Python module registers its classes with
`@register_model` (by `model_type` and `architecture`, the keys of a Hugging Face config.json);
its named variants are JSON files in the C++ family folder (csrc/tessera/models/<family>/configs/),
compiled into the library and read through `tessera._C.core`. `create_model`, `from_pretrained`,
`list_models` and `tessera info` all read these two."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

from . import _C

MODEL_TYPES: Dict[str, type] = {}  # config.json model_type -> class
ARCHITECTURES: Dict[str, type] = {}  # config.json architectures[i] -> class


def register_model(cls: type) -> type:
    """Class decorator: makes `cls` what from_pretrained builds for its model_type / architecture.
    Extensions (C++ or Python) register theirs the same way."""
    if not cls.model_type:
        raise ValueError(f"{cls.__name__} has no model_type to register under")
    MODEL_TYPES[cls.model_type] = cls
    ARCHITECTURES[cls.architecture or cls.__name__] = cls
    return cls


def model_class(config: Dict[str, Any], where: str = "config") -> type:
    """The registered class for a config dict (architectures first, then model_type)."""
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


def list_variants() -> List[str]:
    """Named variants (open_clip's names: ViT-B-32, ViT-B-16, ViT-L-14, ...)."""
    return list(_C.core.list_configs())


def variant(name: str) -> Tuple[str, Dict[str, Any]]:
    """(family, config dict) of a named variant; an unknown name lists the known ones."""
    family, text = _C.core.find_config(name)
    return family, json.loads(text)


def validate(family: str, config: Dict[str, Any], where: str) -> None:
    """Strict check of a variant or an override: unknown keys fail with the valid keys listed."""
    _C.core.validate_config(family, json.dumps(config), where)
