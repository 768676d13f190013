"""`model.generation_config` as transformers offers it, over the model's generation defaults
(its generation_config.json, `generation_defaults`): reading an attribute gives what generate uses
when the call does not say, setting one makes it the model's default (save_pretrained writes it),
and assigning transformers' GenerationConfig takes its settings. A setting tessera's generate
does not have is refused by name: transformers' own would apply it, so ignoring it would change
the output silently. It was an AttributeError (`model.generation_config.pad_token_id = ...`,
Seq2SeqTrainer's predict_with_generate)."""
from __future__ import annotations

from typing import Any, Dict

from .llama import GENERATION_KEYS as KEYS
from .llama import GenerationConfig, check_max_length, generation_config


class GenerationConfigView:
    def __init__(self, model):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KEYS:
            raise AttributeError(f"generation_config.{name}: tessera's generate has no such setting "
                                 f"(its settings: {', '.join(KEYS)})")
        defaults = getattr(self._model, "generation_defaults", None) or {}
        if name in defaults:
            return defaults[name]
        return None if name == "max_length" else getattr(GenerationConfig, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._model.generation_config = {**self.to_diff_dict(), name: value}

    def to_diff_dict(self) -> Dict[str, Any]:
        """The settings that differ from GenerationConfig's defaults (transformers' name)."""
        return dict(getattr(self._model, "generation_defaults", None) or {})

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in KEYS}

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_diff_dict()}"


def set_generation_defaults(model, config) -> None:
    """The model's defaults from a dict or transformers' GenerationConfig (its non-default
    settings, `to_diff_dict`), each checked as a generate call checks it."""
    if hasattr(config, "to_diff_dict"):
        config = config.to_diff_dict()
    if not isinstance(config, dict):
        raise TypeError(f"generation_config must be a dict or transformers' GenerationConfig, "
                        f"got {type(config).__name__}")
    quiet = {"transformers_version", "_from_model_config", "bos_token_id", "decoder_start_token_id"}
    settings = {k: v for k, v in config.items() if k not in quiet and v is not None}
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ValueError(f"generation_config: {', '.join(unknown)} would change what transformers generates, and "
                         f"tessera's generate has no such setting (its settings: {', '.join(KEYS)})")
    given = {k: v for k, v in settings.items() if k != "max_length"}
    generation_config(given, "generation_config")  # the ranges a call is held to
    if settings.get("max_length") is not None:
        check_max_length(settings["max_length"], "generation_config: ")
    model.generation_defaults = settings or None
