"""A model's config: the dict tessera builds from (and saves as config.json), also read by
attribute as transformers' configs are (`model.config.vision_config.hidden_size`), so code written
against a transformers model (a head sized from `config.hidden_size`) runs on tessera's."""
from __future__ import annotations

import collections
import copy
from typing import Any, Dict

import yaml

from .. import _C


def _wrap(value: Any) -> Any:
    return ModelConfig(value) if isinstance(value, dict) and not isinstance(value, ModelConfig) else value


class ModelConfig(dict):
    """A dict whose keys read as attributes too, nested configs included; transformers' attribute
    aliases (`image_token_id` for `image_token_index`) read as their key. Attributes are read-only:
    the model was built from these values, so one set afterwards would change nothing (transformers
    lets `config.pad_token_id = 0` pass; here it is refused by name), but for the run-time flags
    transformers' Trainer sets (`RUNTIME_KEYS`). Pickled, it is plain data
    (an OrderedDict of dicts: a checkpoint holding it loads with `torch.load(weights_only=True)`
    without tessera); YAML's safe dumper writes it as a mapping."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _wrap(value))

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other) -> "ModelConfig":
        self.update(other)
        return self

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> "ModelConfig":
        return ModelConfig(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = dict(_C.core.attribute_aliases()).get(name, name)
        if key in self:
            return self[key]
        raise AttributeError(f"the config has no {name!r} (keys: {', '.join(sorted(self))})")

    #: Flags transformers' Trainer sets on any model's config (`use_cache` from its arguments):
    #: stored as given. They change nothing here and need not: tessera's forward keeps no cache
    #: in training, and generate takes `use_cache` as an argument.
    RUNTIME_KEYS = frozenset({"use_cache"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ModelConfig.RUNTIME_KEYS:
            self[name] = value
            return
        raise AttributeError(f"config.{name} = ...: tessera reads its config when the model is built, so a value set "
                             f"afterwards would change nothing; build the model with it (from_pretrained(path, "
                             f"config_overrides={{{name!r}: ...}}) or the config you pass)")

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (transformers' `to_dict`), nested configs too."""
        return {k: v.to_dict() if isinstance(v, ModelConfig) else v for k, v in self.items()}

    def __reduce__(self):
        # An OrderedDict: the one dict type torch.load(weights_only=True) admits besides dict itself.
        return collections.OrderedDict, (list(self.to_dict().items()),)

    def __copy__(self) -> "ModelConfig":
        return ModelConfig(self)

    def __deepcopy__(self, memo) -> "ModelConfig":
        return ModelConfig(copy.deepcopy(self.to_dict(), memo))


yaml.SafeDumper.add_representer(ModelConfig, yaml.SafeDumper.represent_dict)
