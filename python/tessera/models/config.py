"""A model's config: the dict tessera builds from (and saves as config.json), also read by
attribute as transformers' configs are (`model.config.vision_config.hidden_size`), so code written
against a transformers model (a head sized from `config.hidden_size`) runs on tessera's."""
from __future__ import annotations

from typing import Any, Dict

from .. import _C


class ModelConfig(dict):
    """A dict whose keys read as attributes too, nested configs included; transformers' attribute
    aliases (`image_token_id` for `image_token_index`) read as their key. Attributes are read-only:
    the model was built from these values, so one set afterwards would change nothing (transformers
    lets `config.use_cache = False` pass; here it is refused by name)."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for key, value in self.items():
            if isinstance(value, dict) and not isinstance(value, ModelConfig):
                super().__setitem__(key, ModelConfig(value))

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, ModelConfig(value) if isinstance(value, dict) and not isinstance(value, ModelConfig)
                            else value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = dict(_C.core.attribute_aliases()).get(name, name)
        if key in self:
            return self[key]
        raise AttributeError(f"the config has no {name!r} (keys: {', '.join(sorted(self))})")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"config.{name} = ...: tessera reads its config when the model is built, so a value set "
                             f"afterwards would change nothing; build the model with it (from_pretrained(path, "
                             f"config_overrides={{{name!r}: ...}}) or the config you pass)")

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (transformers' `to_dict`), nested configs too."""
        return {k: v.to_dict() if isinstance(v, ModelConfig) else v for k, v in self.items()}

    def __reduce__(self):
        return ModelConfig, (self.to_dict(),)
