"""`model.generation_config` as transformers offers it, over the model's generation defaults
(its generation_config.json, `generation_defaults`): reading an attribute gives what generate uses
when the call does not say, setting one makes it the model's default (save_pretrained writes it),
and assigning transformers' GenerationConfig takes its settings. A setting tessera's generate
does not have is refused by name: transformers' own would apply it, so ignoring it would change
the output silently. It was an AttributeError (`model.generation_config.pad_token_id = ...`,
Seq2SeqTrainer's predict_with_generate)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from .._warn import warn
from ..io import is_regular_file, read_json
from .generation_settings import (GENERATION_FILE, UNAPPLIED, GenerationConfig, check_length, generation_config,
                                  token_settings, unapplied)
from .generation_settings import GENERATION_KEYS as KEYS
from .generation_output import FLAGS as OUTPUT_KEYS
from .token_rules import token_ids


class GenerationConfigView:
    def __init__(self, model):
        object.__setattr__(self, "_model", model)

    def __getattr__(self, name: str) -> Any:
        if name in OUTPUT_KEYS:  # what generate returns (generation_output.py)
            return bool(effective_defaults(self._model).get(name, False))
        if name in UNAPPLIED:  # transformers' setting generate lacks: set by the model's file, or off
            return effective_defaults(self._model).get(name)
        if name.startswith("_") or name not in KEYS:
            raise AttributeError(f"generation_config.{name}: tessera's generate has no such setting "
                                 f"(its settings: {', '.join(KEYS)})")
        defaults = self.to_diff_dict()
        if name in defaults:
            return defaults[name]
        return getattr(GenerationConfig, name, None if name != "num_return_sequences" else 1)

    def __setattr__(self, name: str, value: Any) -> None:
        self._model.generation_config = {**self.to_diff_dict(), name: value}

    def to_diff_dict(self) -> Dict[str, Any]:
        """The settings that differ from GenerationConfig's defaults (transformers' name): the
        model's own generation config, else the one derived from its config (config_defaults), so
        that a setting changed on it keeps the others."""
        return effective_defaults(self._model)

    def to_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in KEYS}

    def __repr__(self) -> str:
        return f"GenerationConfig {self.to_diff_dict()}"


def effective_defaults(model) -> Dict[str, Any]:
    """What generate starts from: the model's own generation config (its folder's
    generation_config.json, or one set on it), else the one transformers derives from its config
    (`config_generation`, set by from_pretrained), else the config's stop and pad ids."""
    own = getattr(model, "generation_defaults", None)
    if own is not None:
        return dict(own)
    derived = getattr(model, "config_generation", None)
    return dict(derived) if derived is not None else config_ids(model)


def _outer_and_text(model, config: Optional[Dict[str, Any]] = None):
    config = dict(config if config is not None else getattr(model, "config", None) or {})
    text = next((config[k] for k in ("decoder", "generator", "text_config") if isinstance(config.get(k), dict)), {})
    if not getattr(model, "reads_generation_file", True):  # BLIP-2: its language model's, from text_config
        config, text = dict(text or config), {}
    return config, text


def config_ids(model, keys=("eos_token_id", "pad_token_id")) -> Dict[str, Any]:
    """The config's stop and pad ids (`keys`) that are set, the outer config's over its decoder's:
    what transformers derives for a model built from a config (its config class keeps no other
    generation key)."""
    config, text = _outer_and_text(model)
    return {k: config[k] if config.get(k) is not None else text[k] for k in keys
            if config.get(k) is not None or text.get(k) is not None}


def config_defaults(model, folder: str) -> Optional[Dict[str, Any]]:
    """transformers' GenerationConfig.from_model_config over a folder's own config.json (not a
    config= given to from_pretrained, nor its overrides), which from_pretrained uses when the
    folder has no generation_config.json: the generation settings config.json holds (its stop and
    pad ids, and what older checkpoints keep there: max_length, repetition_penalty, ...), the
    outer config's over its decoder's (text_config). None without a config.json, and for BLIP-2,
    whose language model keeps only its text config's ids (its config class drops the rest).
    use_cache is left out: it changes no token, and off it would decode by recomputation."""
    path = os.path.join(folder, "config.json")
    if not getattr(model, "reads_generation_file", True) or not is_regular_file(path):
        return None
    raw = read_json(path, "a model config")
    config, text = _outer_and_text(model, raw if isinstance(raw, dict) else {})
    wanted = (set(KEYS) | set(UNAPPLIED)) - {"use_cache"}
    raw = {k: v for k, v in config.items() if k in wanted and v is not None}
    raw.update({k: v for k, v in text.items() if k in wanted and v is not None and k not in raw})
    return checked_defaults(raw, "config.json (the folder has no generation_config.json)")


def stops_in_vocabulary(stops: List[int], vocab_size: Optional[int]) -> List[int]:
    """Stop ids past the vocabulary are never made: transformers stops at the others. They are
    left out when the first (the pad id's source) is a token; else the list stays, and generate
    names the bad id."""
    if vocab_size is None or not stops or not 0 <= stops[0] < vocab_size:
        return stops
    return [i for i in stops if i < vocab_size]


def unread(model, folder: str, defaults: Optional[dict]) -> None:
    """For a model that does not read generation_config.json (`reads_generation_file`): what the
    file sets that generate would do otherwise is said, not applied, as transformers ignores it."""
    ids = config_ids(model)
    unset = object()
    differ = {k: v for k, v in (defaults or {}).items()
              if ids.get(k, unset) != v and getattr(GenerationConfig, k, unset) != v}
    if differ:
        warn(f"{os.path.join(folder, GENERATION_FILE)}: {', '.join(f'{k}={v!r}' for k, v in differ.items())} not "
             f"applied: transformers' {type(model).__name__} generates with its text config's defaults and does not "
             "read this file, nor does tessera (pass them to generate)")


def set_generation_defaults(model, config) -> None:
    """The model's defaults from a dict or transformers' GenerationConfig (its non-default
    settings, `to_diff_dict`), each checked as a generate call checks it. A transformers setting
    generate lacks is refused, unless it is the model's file's own (kept, so generate keeps refusing
    it) or "off" (None clears it). The result is the model's whole generation config: without stop
    ids it has none, as in transformers (an empty one included)."""
    if not getattr(model, "reads_generation_file", True):
        raise ValueError(f"{type(model).__name__}.generation_config: transformers' generate does not read it (its "
                         "language model generates with its text config's defaults), so tessera's does not take "
                         "one: pass the settings to generate")
    if hasattr(config, "to_diff_dict"):
        config = config.to_diff_dict()
    if not isinstance(config, dict):
        raise TypeError(f"generation_config must be a dict or transformers' GenerationConfig, "
                        f"got {type(config).__name__}")
    current = getattr(model, "generation_defaults", None) or {}
    settings = token_settings(config)
    unknown = sorted(k for k in set(settings) - set(KEYS) if k not in UNAPPLIED or current.get(k) != settings[k])
    if unknown:
        raise ValueError(f"generation_config: {', '.join(unknown)} would change what transformers generates, and "
                         f"tessera's generate has no such setting (its settings: {', '.join(KEYS)})")
    given = {k: v for k, v in settings.items() if k in KEYS and k not in ("max_length", "min_length")}
    generation_config(given, "generation_config")  # the ranges a call is held to
    for key in ("max_length", "min_length"):
        if settings.get(key) is not None:
            check_length(key, settings[key], "generation_config: ")
    settings.update(output_flags(config))
    model.generation_defaults = settings


def output_flags(config: Dict[str, Any]) -> Dict[str, bool]:
    """The output flags a generation config turns on (return_dict_in_generate, output_scores,
    output_logits): kept beside the settings, generate returns what they ask for."""
    return {k: True for k in OUTPUT_KEYS if config.get(k) is True}


def read_generation_defaults(folder: str, vocab_size: Optional[int] = None) -> Optional[dict]:
    """The generation defaults of a model folder's generation_config.json (transformers' file: its
    eos/pad ids, sampling settings such as Llama-3-Instruct's, max_length, which counts the prompt),
    the keys generate takes; None without the file. bos and metadata are not generate's. A value
    generate would refuse (transformers loads it: `repetition_penalty: 0`, `temperature: 0`
    with sampling; an eos id past the vocabulary) is left out with a warning, never
    a failed load; an integral float where an int goes (`max_new_tokens: 256.0`) is read as the int.
    A setting transformers applies and generate lacks (`guidance_scale`) is kept: generate
    refuses it by name until it is cleared."""
    path = os.path.join(folder, GENERATION_FILE)
    if not is_regular_file(path):
        return None
    raw = read_json(path, "a generation config")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a generation config is a JSON object, got {type(raw).__name__}")
    return checked_defaults(raw, path, vocab_size)


def checked_defaults(raw: Dict[str, Any], path: str, vocab_size: Optional[int] = None) -> dict:
    """A generation config's settings that generate takes, each checked as read_generation_defaults
    says; `path` names where they come from in a warning."""
    ints = ("max_new_tokens", "min_new_tokens", "num_beams", "top_k", "pad_token_id", "max_length", "min_length",
            "num_return_sequences", "no_repeat_ngram_size")
    defaults = {k: v for k, v in raw.items() if unapplied(k, v)}
    for key in KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if key in ints and isinstance(value, float) and value.is_integer():
            value = int(value)
        try:
            if key in ("max_length", "min_length"):  # count the prompt: turned into new tokens per call
                check_length(key, value, "")
            elif key == "num_return_sequences":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError("must be an int >= 1")
            else:
                generation_config({key: value}, "generate")
            ids = token_ids(key, value)
            if key == "eos_token_id" and isinstance(value, list) and stops_in_vocabulary(ids, vocab_size) != ids:
                warn(f"{path}: eos_token_id {[i for i in ids if i >= vocab_size]} left out (not tokens of the model, "
                     f"vocab_size {vocab_size})")
                value = ids = stops_in_vocabulary(ids, vocab_size)
            if ids and vocab_size is not None and max(ids) >= vocab_size:  # every generate would fail on it
                raise ValueError(f"{max(ids)} is not a token of the model (vocab_size {vocab_size})")
        except (TypeError, ValueError) as e:
            warn(f"{path}: {key} {value!r} left out ({e})")
            continue
        defaults[key] = value
    try:
        generation_config({k: v for k, v in defaults.items() if k in GenerationConfig.__dataclass_fields__},
                          "generate")
    except (TypeError, ValueError) as e:  # a combination generate refuses: its sampling settings go
        sampling = ("do_sample", "temperature", "top_k", "top_p")
        warn(f"{path}: {e}; its sampling settings ({', '.join(k for k in sampling if k in defaults)}) are "
             "left out")
        defaults = {k: v for k, v in defaults.items() if k not in sampling}
    defaults.update(output_flags(raw))
    return defaults
