"""One entry point per way of making a model, as open_clip and timm have:
`create_model(name)` from the named-config registry, `from_pretrained(dir)` from a Hugging Face
checkpoint folder; `list_models()` lists the names."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Type

from . import _C
from .models.clip import CLIPModel, CLIPTextModel, CLIPVisionModel
from .models.pretrained import PreTrainedModel, merge_config, read_config

# model_type in config.json -> class
MODEL_TYPES: Dict[str, Type[PreTrainedModel]] = {
    "clip": CLIPModel,
    "clip_vision_model": CLIPVisionModel,
    "clip_text_model": CLIPTextModel,
}
_ARCHITECTURES = {cls.architecture: cls for cls in MODEL_TYPES.values()}


def register_model_type(model_type: str, cls: Type[PreTrainedModel]) -> None:
    """Lets an extension (C++ or Python) plug its model class into from_pretrained."""
    MODEL_TYPES[model_type] = cls
    _ARCHITECTURES[cls.architecture or cls.__name__] = cls


def model_class(config: Dict[str, Any], where: str = "config") -> Type[PreTrainedModel]:
    for arch in config.get("architectures") or []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    model_type = config.get("model_type")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    raise ValueError(
        f"{where}: unsupported model_type {model_type!r} / architectures {config.get('architectures')!r} "
        f"(supported model types: {', '.join(sorted(MODEL_TYPES))})"
    )


def from_pretrained(path: str, **kwargs) -> PreTrainedModel:
    """Loads a Hugging Face folder (config.json + model.safetensors) into the matching class."""
    config = read_config(path)
    return model_class(config, path).from_pretrained(path, **kwargs)


def list_models() -> List[str]:
    """Names accepted by create_model (open_clip's names: ViT-B-32, ViT-B-16, ViT-L-14, ...)."""
    return list(_C.core.list_configs())


def get_model_config(name: str) -> Dict[str, Any]:
    """The Hugging Face style config dict registered under `name`."""
    _, text = _C.core.find_config(name)
    return json.loads(text)


def create_model(name: str, pretrained: Optional[str] = None, config_overrides: Optional[Dict[str, Any]] = None,
                 **kwargs) -> PreTrainedModel:
    """A model of a registered architecture, randomly initialised, or loaded from `pretrained`
    (a checkpoint folder). `config_overrides` updates the config recursively."""
    config = merge_config(get_model_config(name), config_overrides)
    model = model_class(config, name)(config, **kwargs)
    if pretrained:
        from .models.pretrained import load_weights
        model.load_state_dict(load_weights(pretrained), strict=True)
    return model
