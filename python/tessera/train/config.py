"""Recipe configuration: YAML -> nested dataclasses. A key that does not exist is an error that
lists the valid keys (a typo must never be silently ignored)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class ModelConfig:
    name: Optional[str] = None              # a registered config (tessera.list_models())
    config: Dict[str, Any] = field(default_factory=dict)  # HF config dict, or overrides of `name`
    pretrained: Optional[str] = None        # checkpoint folder to start from
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    dataset: str = "fashion_mnist"          # fashion_mnist | image_folder | captions
    root: str = "/usr/share/datasets/fashion-mnist"
    eval_root: Optional[str] = None         # evaluation data (defaults: the test split / root)
    image_size: int = 28
    templates: List[str] = field(default_factory=lambda: ["a photo of a {}."])
    class_names: Optional[List[str]] = None  # caption names for classes (defaults: dataset names)
    context_length: int = 77
    batch_size: int = 256
    num_workers: int = 2
    prefetch: int = 4
    train_augment: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accumulation_steps: int = 1


@dataclass
class LossConfig:
    kind: str = "clip"                      # clip | siglip
    local_loss: bool = False
    gather_with_grad: bool = True


@dataclass
class TrainConfig:
    steps: int = 400
    seed: int = 0
    precision: str = "fp32"                 # fp32 | bf16 (autocast)
    log_every: int = 10
    eval_every: int = 0                     # 0: only at the end
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_bad_steps: int = 5                  # consecutive non-finite losses before stopping
    threads: int = 0                        # torch threads per process (0: cores / processes)


@dataclass
class EvalConfig:
    zero_shot: bool = True
    retrieval: bool = False
    max_images: int = 0                     # 0: all evaluation images


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _build(cls, values: Any, where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__} {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(hint, value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(hint, value, where: str):
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union:
        return None if value is None else _coerce(args[0], value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    if origin in (list, dict) and not isinstance(value, origin):
        raise ValueError(f"{where}: expected a {origin.__name__}, got {value!r}")
    return value


def recipe_from_dict(values: Dict[str, Any], where: str = "recipe") -> Recipe:
    return _build(Recipe, values or {}, where)


def load_recipe(path: str, overrides: Optional[List[str]] = None) -> Recipe:
    """Reads a YAML recipe; `overrides` are `section.key=value` strings (YAML-parsed values)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML: {e}") from None
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value")
        node = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(raw)
    return recipe_from_dict(values, path)


def recipe_to_dict(recipe: Recipe) -> Dict[str, Any]:
    return dataclasses.asdict(recipe)
